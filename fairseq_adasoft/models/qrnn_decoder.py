"""The decoder of ``qrnn_lm``: embedding (plain or adaptive input) -> QRNN stack -> output layer.

It carries the QRNN state through fairseq's incremental state when generating, through its
``StreamState`` between batches of stateful BPTT, mixes in the continuous cache when one is set
for evaluation, and adapts its weights to the text it scores through the ``DynamicEval`` it holds.
"""

import contextlib
import logging
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor, nn

from fairseq_adasoft.modules import (
    QRNN,
    AdaptiveInput,
    AdaptiveSoftmax,
    CacheMemory,
    DynamicEvalSetup,
    LazyLogProbs,
    LockedDropout,
    NeuralCache,
    StreamState,
    embedding_dropout,
    parse_cutoffs,
)
from fairseq_adasoft.models.dynamic_eval import DynamicEval, mean_nll
from fairseq_adasoft.models.embedding import build_embedding
from fairseq_adasoft.hardware import cpu_has_native_bf16

logger = logging.getLogger(__name__)

# QRNN-LM context is unbounded; fairseq asks for a number.
UNBOUNDED_POSITIONS = int(1e6)


class QRNNDecoder(FairseqIncrementalDecoder):
    """Embedding, QRNN stack and output layer; carries the QRNN state through
    fairseq's incremental state when generating."""

    def __init__(self, cfg, dictionary):
        super().__init__(dictionary)
        vocab_size = len(dictionary)
        self.dropout_embed = cfg.dropout_embed
        self.cpu_autocast_bf16 = cfg.cpu_autocast_bf16
        tie_adaptive = cfg.tie_adaptive_weights
        self.embed_tokens = build_embedding(cfg, vocab_size, dictionary.pad())
        adaptive_input = isinstance(self.embed_tokens, AdaptiveInput)
        self.dropout_input = LockedDropout(cfg.dropout_input)
        self.qrnn = QRNN(
            input_size=cfg.embed_dim,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout_hidden,
            windows=[cfg.first_window] + [1] * (cfg.num_layers - 1),
            output_size=cfg.embed_dim,
            output_gate=not cfg.no_output_gate,
            zoneout=cfg.zoneout,
            kernel=cfg.qrnn_kernel,
            weight_drop=cfg.weight_drop,
        )
        self.dropout_output = LockedDropout(cfg.dropout)
        self.output_projection = None
        if cfg.adaptive_softmax_cutoff:
            if cfg.share_input_output_embed:
                raise ValueError(
                    "--share-input-output-embed ties a full softmax; with --adaptive-softmax-cutoff "
                    "use --tie-adaptive-weights instead"
                )
            cutoffs = parse_cutoffs(cfg.adaptive_softmax_cutoff, vocab_size)
            self.adaptive_softmax = AdaptiveSoftmax(
                cfg.embed_dim,
                vocab_size,
                cutoffs,
                div_value=cfg.adaptive_softmax_div_value,
                dropout=cfg.adaptive_softmax_dropout,
                tied_weight=self.embed_tokens.weight if tie_adaptive and not adaptive_input else None,
                train_autocast_dtype=torch.bfloat16 if self.cpu_autocast_bf16 else None,
                tied_input=self.embed_tokens if tie_adaptive and adaptive_input else None,
                tie_proj=cfg.tie_adaptive_proj,
            )
        else:
            if tie_adaptive:
                raise ValueError(
                    "--tie-adaptive-weights ties an adaptive softmax; set --adaptive-softmax-cutoff, "
                    "or use --share-input-output-embed to tie a full softmax"
                )
            self.output_projection = nn.Linear(cfg.embed_dim, vocab_size, bias=False)
            if cfg.share_input_output_embed:
                if adaptive_input:
                    raise ValueError(
                        "--share-input-output-embed ties a full softmax to a plain embedding; with "
                        "--adaptive-input set --adaptive-softmax-cutoff and --tie-adaptive-weights instead"
                    )
                self.output_projection.weight = self.embed_tokens.weight
        # Stateful BPTT: the state carried between batches of the task's streams.
        self.carried = StreamState(cfg.num_layers)
        # Evaluation only (use_neural_cache): the cache and, per stream set, what it remembers.
        self.neural_cache: Optional[NeuralCache] = None
        self.cache_memory: Dict[str, CacheMemory] = {}
        # Evaluation only (use_dynamic_eval): Krause et al.'s dynamic evaluation of these weights.
        self.dynamic_eval: Optional[DynamicEval] = None
        self._warned_slow_bf16 = False

    def _bf16_autocast(self, device: torch.device) -> bool:
        """Whether --cpu-autocast-bf16 applies here. Training that way is refused
        on a CPU without bf16 matmul instructions, where it would crawl."""
        if not (self.cpu_autocast_bf16 and device.type == "cpu"):
            return False
        if not cpu_has_native_bf16():
            capability = torch.backends.cpu.get_cpu_capability()
            if self.training:
                raise ValueError(
                    f"--cpu-autocast-bf16: this CPU (torch capability {capability}) has no bf16 matmul "
                    "instructions (AVX512-BF16 or AMX), and there torch's bf16 matmuls run several times "
                    "slower than fp32 (benchmarks/results/cpu_bf16_avx2.json). Drop --cpu-autocast-bf16 "
                    "to train in fp32, or train on a CPU that has them"
                )
            if not self._warned_slow_bf16:
                self._warned_slow_bf16 = True
                logger.warning(
                    "this model was trained with --cpu-autocast-bf16, and this CPU (torch capability %s) "
                    "has no bf16 matmul instructions: scoring will be several times slower than fp32. "
                    "--model-overrides \"{'cpu_autocast_bf16': False}\" scores in fp32 instead (close to, "
                    "not the same as, the bf16 figures)", capability,
                )
        return True

    def _get_state(self, incremental_state) -> Optional[List]:
        cached = self.get_incremental_state(incremental_state, "qrnn_state")
        if cached is None:
            return None
        return [(cached[f"c{i}"], cached.get(f"x{i}")) for i in range(len(self.qrnn.layers))]

    def _set_state(self, incremental_state, state: List) -> None:
        cached: Dict[str, Optional[Tensor]] = {}
        for i, (c, x) in enumerate(state):
            cached[f"c{i}"] = c
            if x is not None:
                cached[f"x{i}"] = x
        self.set_incremental_state(incremental_state, "qrnn_state", cached)

    def extract_features(self, prev_output_tokens: Tensor, incremental_state=None, stream=None, **kwargs):
        """``stream``: the position of this batch in the task's streams (see
        ``tasks/streams.py``) for stateful BPTT; None scores the batch alone."""
        state = None
        if stream is not None:
            if incremental_state is not None:
                raise ValueError("a batch cannot both continue --stateful-bptt streams and decode incrementally")
            state = self.carried.read(stream, prev_output_tokens.device)
        if incremental_state is not None:
            state = self._get_state(incremental_state)
            if state is not None:  # earlier tokens are already in the state
                prev_output_tokens = prev_output_tokens[:, -1:]
        if incremental_state is not None and self.dynamic_eval is not None and not self.training:
            # Refused before dynamic evaluation starts: its statistics cost a pass over the training split.
            raise ValueError("--dynamic-eval scores given text (fairseq-eval-lm); it cannot generate: drop it")
        adapting = self._adapting()  # dynamic evaluation: this batch's graph is kept for its step
        with torch.enable_grad() if adapting else contextlib.nullcontext():
            if adapting:
                self.dynamic_eval.before_forward(prev_output_tokens)
            x = embedding_dropout(self.embed_tokens, prev_output_tokens, self.dropout_embed, self.training)
            x = x.transpose(0, 1)  # B x T x C -> T x B x C
            x = self.dropout_input(x)
            autocast = self._bf16_autocast(x.device)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                x, state = self.qrnn(x, state)  # T x B x C
            x = self.dropout_output(x.float() if autocast else x)
            x = x.transpose(0, 1)  # B x T x C (a view made without autograd would cut the graph)
        if incremental_state is not None:
            self._set_state(incremental_state, state)
        if stream is not None:
            self.carried.keep(stream, state)
        extra = {"attn": None}
        if self.neural_cache is not None and not self.training:
            extra["neural_cache"] = self._read_cache(x.detach(), prev_output_tokens, stream, incremental_state)
        return x, extra

    def use_neural_cache(self, cache: Optional[NeuralCache]) -> None:
        """Score with Grave et al.'s continuous cache in evaluation (None: without)."""
        self.neural_cache, self.cache_memory = cache, {}

    def use_dynamic_eval(self, setup: Optional[DynamicEvalSetup]) -> None:
        """Score with dynamic evaluation (None: without). It starts at the first
        evaluation batch, from the weights loaded by then (the trained ones)."""
        self.dynamic_eval = None if setup is None else DynamicEval(setup, self.dictionary.pad(), len(self.dictionary))

    def _adapting(self) -> bool:
        """Whether this forward is scored and then stepped on (starting dynamic evaluation first)."""
        if self.dynamic_eval is None or self.training or self.dynamic_eval.gathering:
            return False
        if not self.dynamic_eval.started:
            self._start_dynamic_eval()
        return True

    def _start_dynamic_eval(self) -> None:
        """Dynamic evaluation from the trained weights; its statistics (when gathered) read
        training batches through this decoder, with the cache off, continuing their own streams."""
        params, streams = list(self.parameters()), set()
        device = params[0].device

        def batch_loss(sample) -> Tensor:
            stream, target = sample["net_input"]["stream"], sample["target"].to(device)
            streams.add(stream["name"])
            features, _ = self.extract_features(sample["net_input"]["src_tokens"].to(device), stream=stream)
            return mean_nll(self.target_log_probs(features, target), target, self.dictionary.pad())

        # The embedding is stepped lazily, row by row as batches read it, unless all of it is read.
        lazy = self.embed_tokens.weight if isinstance(self.embed_tokens, nn.Embedding) else None
        if self.output_projection is not None and self.output_projection.weight is lazy:
            lazy = None  # a tied full softmax reads every row
        tied_rows = self.adaptive_softmax is not None and lazy is not None
        shared = self.adaptive_softmax.tied_weight_rows() if tied_rows else None  # read by every forward
        cache, self.neural_cache = self.neural_cache, None  # the statistics read training text
        try:
            self.dynamic_eval.start(params, batch_loss, lazy, shared)
        finally:
            self.neural_cache = cache
            for name in streams:
                self.carried.forget(name)
        if lazy is not None:  # a step reads few of its rows: their gradient need not be V x d
            self.embed_tokens.sparse = True
            if self.adaptive_softmax is not None:
                self.adaptive_softmax.sparse_tied_rows = True

    def target_log_probs(self, features: Tensor, target: Tensor) -> Tensor:
        """log p(target): B x T, fp32."""
        if self.adaptive_softmax is not None:
            flat = self.adaptive_softmax.target_log_prob(features.reshape(-1, features.size(-1)), target.reshape(-1))
            return flat.view(target.shape)
        log_probs = F.log_softmax(self.output_layer(features).float(), dim=-1)
        return log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def _read_cache(self, x: Tensor, tokens: Tensor, stream: Optional[Dict], incremental_state) -> tuple:
        """Cache weights of this batch (B x T x K) and their words (B x K); the
        memory carries over between batches of --stateful-bptt streams."""
        if incremental_state is not None:
            raise ValueError("--neural-cache-size scores given text (fairseq-eval-lm); it cannot generate: drop it")
        memory = None
        if stream is not None and stream["batch"] > 0:
            memory = self.cache_memory.get(stream["name"])
        weights, values, memory = self.neural_cache.attend(x, tokens, memory)
        if stream is not None:
            self.cache_memory[stream["name"]] = memory
        return weights, values

    def get_normalized_probs(self, net_output, log_probs: bool, sample=None) -> Tensor:
        cached = net_output[1].get("neural_cache") if isinstance(net_output[1], dict) else None
        dynamic = self.dynamic_eval is not None and self.dynamic_eval.started and not self.training
        if cached is None and not dynamic:
            return super().get_normalized_probs(net_output, log_probs, sample)
        if cached is not None and net_output[0].shape[:2] != cached[0].shape[:2]:
            raise ValueError(
                f"--neural-cache-size: the output was split ({tuple(net_output[0].shape[:2])} positions, the "
                f"cache read {tuple(cached[0].shape[:2])}): drop fairseq-eval-lm's --softmax-batch, which scoring "
                f"does not need (it reads log p(target) only, in memory that does not grow with the vocabulary)"
            )
        if dynamic:  # scored, then stepped on
            model_lp = self.dynamic_eval.score_then_step(net_output[0], sample, self.target_log_probs)
        else:  # lazy when a scorer asks (a target given, no gradient): see AdaptiveSoftmax.get_log_prob
            model_lp = super().get_normalized_probs(net_output, log_probs=True, sample=sample)  # B x T x V
        if cached is None:
            return model_lp if log_probs else model_lp.exp()
        weights, values = cached  # B x T x K, B x K
        target = None if sample is None else sample.get("target")
        if self.neural_cache.without is not None and target is not None:
            model_lp = self.neural_cache.without.tallied(model_lp, target)
        if isinstance(model_lp, LazyLogProbs):
            mixed = self.neural_cache.lazy_mixed_log_probs(model_lp, weights, values)
        else:
            mixed = self.neural_cache.mixed_log_probs(model_lp, weights, values)  # B x T x V
        return mixed if log_probs else mixed.exp()

    def output_layer(self, features: Tensor, **kwargs) -> Tensor:
        if self.adaptive_softmax is not None:
            return features  # the adaptive softmax scores features directly
        # bf16 logits while training, as the adaptive softmax's; fairseq's log-softmax upcasts.
        autocast = self.training and self._bf16_autocast(features.device)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return self.output_projection(features)  # B x T x V

    def forward(self, prev_output_tokens, incremental_state=None, features_only=False, stream=None, **kwargs):
        x, extra = self.extract_features(prev_output_tokens, incremental_state, stream)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def reorder_incremental_state(self, incremental_state, new_order: Tensor) -> None:
        cached = self.get_incremental_state(incremental_state, "qrnn_state")
        if cached is None:
            return
        reordered = {k: v.index_select(0, new_order) for k, v in cached.items() if v is not None}
        self.set_incremental_state(incremental_state, "qrnn_state", reordered)

    def max_positions(self) -> int:
        return UNBOUNDED_POSITIONS
