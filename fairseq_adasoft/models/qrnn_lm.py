"""``qrnn_lm``: a QRNN language model with an adaptive or full softmax output,
its flags, and the named architectures that set them.

Embedding -> QRNN stack (window 2 on the first layer, 1 above) -> adaptive
softmax (Grave et al. 2017) when ``--adaptive-softmax-cutoff`` is set, else a
full softmax. Regularisation follows AWD-LSTM/AWD-QRNN (Merity, Keskar &
Socher 2018, "Regularizing and Optimizing LSTM Language Models").
"""

import contextlib
import zlib
from dataclasses import MISSING, dataclass, field, fields
from typing import Callable, List, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import FairseqLanguageModel, register_model, register_model_architecture
from omegaconf import OmegaConf, open_dict
from torch import Tensor

from fairseq_adasoft.models.qrnn_decoder import QRNNDecoder
from fairseq_adasoft.modules import DynamicEvalSetup, NeuralCache
from fairseq_adasoft.modules.qrnn import KERNELS
from fairseq_adasoft.flag_ranges import AT_LEAST_ONE, PROBABILITY, Range, check_flag_ranges

# The state-dict key of the dictionary's CRC. "version" in it makes fairseq's
# --store-ema copy the integer instead of averaging it, which fails
# (fairseq.models.ema skips keys holding "version").
VOCAB_KEY = "vocab_version"


@dataclass
class QRNNLanguageModelConfig(FairseqDataclass):
    # Defaults: AWD-QRNN on WikiText-2, as published with awd-lstm-lm.
    embed_dim: int = field(default=400, metadata={"help": "word embedding size; also the last QRNN layer's size"})
    hidden_size: int = field(default=1550, metadata={"help": "hidden size of every QRNN layer but the last"})
    num_layers: int = field(default=4, metadata={"help": "number of QRNN layers"})
    first_window: int = field(
        default=2, metadata={"help": "convolution window (1 or 2) of the first QRNN layer; layers above use 1"}
    )
    no_output_gate: bool = field(
        default=False, metadata={"help": "drop the O gate: f-pooling, h_t = c_t (default: fo-pooling, with the O gate)"}
    )
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the last QRNN layer's output"})
    dropout_input: float = field(default=0.4, metadata={"help": "locked dropout on the embeddings"})
    dropout_hidden: float = field(default=0.2, metadata={"help": "locked dropout between QRNN layers"})
    dropout_embed: float = field(default=0.1, metadata={"help": "embedding dropout: drop whole word types"})
    weight_drop: float = field(default=0.1, metadata={"help": "DropConnect on the QRNN gate weights"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout probability on the forget gate"})
    qrnn_kernel: ChoiceEnum(KERNELS) = field(
        default="torch",
        metadata={"help": "how each QRNN layer pools: 'torch' ops around forget_mult (any device), or 'triton', "
                  "one fused Triton kernel per layer, forward and backward, for CUDA GPUs (opt-in until it is "
                  "measured on a GPU; needs pip install '.[gpu]')"},
    )
    share_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the input embedding and the full-softmax output weights"}
    )
    tie_adaptive_weights: bool = field(
        default=False,
        metadata={
            "help": "share the input embedding with the adaptive softmax: the head's shortlist rows, "
            "and the output matrix of every tail whose projection keeps embed_dim features "
            "(--adaptive-softmax-div-value 1); with --adaptive-input, each band's embedding is the "
            "output matrix of its cluster (band 0: the head's shortlist)"
        },
    )
    adaptive_input: bool = field(
        default=False,
        metadata={
            "help": "adaptive input representations (Baevski & Auli 2019) instead of the plain embedding: "
            "band i of the vocabulary is embedded in embed_dim / factor^i features and projected to embed_dim"
        },
    )
    adaptive_input_factor: float = field(
        default=4.0, metadata={"help": "--adaptive-input: band i has embed_dim / factor^i features"}
    )
    adaptive_input_cutoff: Optional[str] = field(
        default=None,
        metadata={
            "help": "--adaptive-input's bands, in the forms of --adaptive-softmax-cutoff (ids, fractions "
            "or auto); unset: the adaptive softmax's cutoffs"
        },
    )
    tie_adaptive_proj: bool = field(
        default=False,
        metadata={
            "help": "with --adaptive-input and --tie-adaptive-weights, also share each adaptive softmax "
            "tail's projection with its band's (transposed)"
        },
    )
    cpu_autocast_bf16: bool = field(
        default=False,
        metadata={
            "help": "on CPU, run the QRNN's matmuls under torch.autocast('cpu', torch.bfloat16) "
            "(fairseq's --bf16 does not work on CPU), and the output layer's too while training; "
            "the recurrence, log-softmax and loss stay in fp32, and so does the output layer in "
            "evaluation, so reported perplexities are not rounded to bf16"
        },
    )
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None,
        metadata={
            "help": "comma-separated adaptive softmax cutoffs, as word ids (2000,6000) or as "
            "fractions of the vocabulary (0.1,0.3), or 'auto' (chosen by the "
            "language_modeling_freqsorted task from a cost model); unset means a full softmax"
        },
    )
    adaptive_softmax_div_value: float = field(
        default=4.0, metadata={"help": "tail i projects to embed_dim / div_value^(i+1)"}
    )
    adaptive_softmax_dropout: float = field(default=0.0, metadata={"help": "dropout inside the adaptive softmax tails"})


# The allowed values of the numeric flags above, checked once in build_model.
FLAG_RANGES = {
    "embed_dim": AT_LEAST_ONE,
    "hidden_size": AT_LEAST_ONE,
    "num_layers": AT_LEAST_ONE,
    "dropout": PROBABILITY,
    "dropout_input": PROBABILITY,
    "dropout_hidden": PROBABILITY,
    "dropout_embed": PROBABILITY,
    "weight_drop": PROBABILITY,
    "zoneout": PROBABILITY,
    "adaptive_softmax_div_value": Range(1),  # tails never wider than embed_dim
    "adaptive_softmax_dropout": PROBABILITY,
    "adaptive_input_factor": Range(1),  # bands never wider than embed_dim
}


def vocabulary_crc(dictionary) -> int:
    return zlib.crc32("\n".join(dictionary.symbols).encode("utf-8"))


@register_model("qrnn_lm", dataclass=QRNNLanguageModelConfig)
class QRNNLanguageModel(FairseqLanguageModel):
    """QRNN language model (Bradbury et al. 2016, "Quasi-Recurrent Neural
    Networks") with AWD regularisation (Merity et al. 2018) and an adaptive
    softmax output (Grave et al. 2017)."""

    def __init__(self, decoder):
        super().__init__(decoder)
        # Which word each id means: a checkpoint only makes sense with this order.
        self.register_buffer(VOCAB_KEY, torch.tensor(vocabulary_crc(decoder.dictionary)))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        saved = state_dict.get(VOCAB_KEY)
        if saved is not None and int(saved) != int(getattr(self, VOCAB_KEY)):
            raise ValueError(
                "this checkpoint was trained with another word order than the dictionary it is loaded "
                "with: pass --task language_modeling_freqsorted (it re-sorts the dictionary as in "
                "training) and the data the model was trained on"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def carried_stream_state(self, name: str) -> List[Tensor]:
        """Stateful BPTT: the S-stream state tensors carried for stream set ``name``."""
        return self.decoder.carried.tensors(name)

    def share_stream_state(self, stream, all_reduce: Callable[[Tensor], Tensor]) -> None:
        """DDP with stateful BPTT: gather every process's rows of the carried
        state (``all_reduce`` sums over processes), so that one checkpoint
        resumes all streams."""
        self.decoder.carried.share_rows(stream, all_reduce)

    def use_neural_cache(self, cache: Optional[NeuralCache]) -> None:
        """Evaluate with a continuous cache (Grave, Joulin & Usunier 2017)."""
        self.decoder.use_neural_cache(cache)

    def use_dynamic_eval(self, setup: Optional[DynamicEvalSetup]) -> None:
        """Evaluate with dynamic evaluation (Krause et al. 2018; ``models/dynamic_eval.py``)."""
        self.decoder.use_dynamic_eval(setup)

    @staticmethod
    def upgrade_saved_cfg(cfg) -> None:
        """A saved model config in today's flag names, before fairseq merges it with the dataclass
        (which drops unknown keys): ``output_gate`` (on by default) became ``no_output_gate``."""
        saved = getattr(cfg, "output_gate", None)
        if saved is not None:
            with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
                cfg.no_output_gate = not saved
                delattr(cfg, "output_gate")

    @classmethod
    def build_model(cls, cfg: QRNNLanguageModelConfig, task):
        check_flag_ranges(cfg, FLAG_RANGES)
        if cfg.first_window not in (1, 2):
            raise ValueError(f"--first-window must be 1 or 2, got {cfg.first_window}")
        return cls(QRNNDecoder(cfg, task.target_dictionary))


def apply_preset(cfg, name: str) -> None:
    """Set the flags of preset ``name`` (``presets.ARCHITECTURES``) that the command line left unset."""
    # Imported here: a module-level import would make ``python -m fairseq_adasoft.presets`` warn.
    from fairseq_adasoft.presets import ARCHITECTURES

    for key, value in ARCHITECTURES[name].items():
        setattr(cfg, key, getattr(cfg, key, value))
    # fairseq merges the dataclass's defaults into a saved config only under the model's
    # own name (qrnn_lm): a checkpoint of a named variant saved before a flag existed lacks it.
    for f in fields(QRNNLanguageModelConfig):
        if f.default is not MISSING and not f.name.startswith("_"):
            setattr(cfg, f.name, getattr(cfg, f.name, f.default))


@register_model_architecture("qrnn_lm", "qrnn_lm_wikitext2_seed")
def qrnn_lm_wikitext2_seed(cfg):
    """The seed experiment: a QRNN with the adaptive softmax of Grave et al.
    2017 ("Efficient softmax approximation for GPUs") at their [V/15, 3V/15]
    cutoffs. The seed trained with SGD with Nesterov momentum, lr 1 and
    gradient clipping: in fairseq, ``--optimizer nag --lr 1 --momentum 0.9
    --clip-norm 0.25``."""
    apply_preset(cfg, "qrnn_lm_wikitext2_seed")


@register_model_architecture("qrnn_lm", "qrnn_lm_wikitext2")
def qrnn_lm_wikitext2(cfg):
    """The WikiText-2 model for an hour of 2-core CPU training
    (recipes/wikitext2/run.sh): the seed's cutoffs, a wider QRNN (the seed's
    under-fits in an hour: training and validation perplexity stay together),
    and the AWD dropouts of Merity et al. 2018 scaled down for a short run;
    run.sh adds presets.MAIN_JOB's train_flags and, where bf16 pays, --cpu-autocast-bf16."""
    apply_preset(cfg, "qrnn_lm_wikitext2")


@register_model_architecture("qrnn_lm", "qrnn_lm_wikitext103")
def qrnn_lm_wikitext103(cfg):
    """Merity, Keskar & Socher 2018, "An Analysis of Neural Language Modeling
    at Multiple Scales" (33.0 test perplexity on WikiText-103): their 4-layer
    QRNN with light dropouts and no weight drop, and awd-lstm-lm's WikiText-103
    splits, whose tails keep the full dimension. They trained with Adam, lr
    1e-3, BPTT 140."""
    apply_preset(cfg, "qrnn_lm_wikitext103")
