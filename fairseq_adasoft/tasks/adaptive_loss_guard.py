"""fairseq's ``--criterion adaptive_loss`` drives fairseq's own AdaptiveSoftmax
(through ``adapt_target``); this plugin's output layer, or a full softmax, it
would misread. Refused when fairseq-train builds the criterion (before fairseq's
own ``--ddp-backend`` check) and at each step, for a criterion built another way."""

from fairseq.criterions.adaptive_loss import AdaptiveLoss

ADAPTIVE_LOSS_REFUSAL = (
    "--criterion adaptive_loss only serves fairseq's own AdaptiveSoftmax; this model's "
    "output layer is served by --criterion adaptive_softmax (adaptive or full softmax)"
)


def refuse_adaptive_loss_config(cfg, fairseq_adaptive_softmax: bool) -> None:
    """``cfg``: a criterion's dataclass config, or args; the flag: the built model's output layer is fairseq's."""
    name = getattr(cfg, "_name", None) or getattr(cfg, "criterion", None)
    if name == "adaptive_loss" and not fairseq_adaptive_softmax:
        raise ValueError(ADAPTIVE_LOSS_REFUSAL)


def refuse_adaptive_loss(model, criterion) -> None:
    """``model`` unwrapped from DDP."""
    layer = getattr(model.decoder, "adaptive_softmax", None)
    if isinstance(criterion, AdaptiveLoss) and not hasattr(layer, "adapt_target"):
        raise ValueError(ADAPTIVE_LOSS_REFUSAL)
