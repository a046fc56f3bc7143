"""``qrnn_lm``'s input embedding: plain, or adaptive input (Baevski & Auli 2019,
"Adaptive Input Representations for Neural Language Modeling") whose bands
default to the adaptive softmax's clusters."""

from torch import nn

from fairseq_adasoft.modules import AdaptiveInput, parse_cutoffs


def build_embedding(cfg, vocab_size: int, padding_idx: int) -> nn.Module:
    """The plain embedding, or with --adaptive-input an ``AdaptiveInput`` whose
    bands default to the adaptive softmax's clusters."""
    if cfg.tie_adaptive_proj and not (cfg.adaptive_input and cfg.tie_adaptive_weights):
        raise ValueError(
            "--tie-adaptive-proj shares the adaptive softmax's tail projections with adaptive input's: "
            "add --adaptive-input --tie-adaptive-weights, or drop --tie-adaptive-proj"
        )
    if not cfg.adaptive_input:
        if cfg.adaptive_input_cutoff:
            raise ValueError("--adaptive-input-cutoff sets adaptive input's bands: add --adaptive-input, or drop it")
        return nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=padding_idx)
    spec, flag = cfg.adaptive_input_cutoff, "--adaptive-input-cutoff"
    if not spec:
        spec, flag = cfg.adaptive_softmax_cutoff, "--adaptive-softmax-cutoff"
    if not spec:
        raise ValueError(
            "--adaptive-input needs bands: set --adaptive-input-cutoff, or --adaptive-softmax-cutoff "
            "(which it then shares)"
        )
    cutoffs = parse_cutoffs(spec, vocab_size, flag)
    return AdaptiveInput(vocab_size, cfg.embed_dim, cutoffs, cfg.adaptive_input_factor, padding_idx)
