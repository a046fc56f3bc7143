"""The adaptive softmax's logit layouts (modules/logits.py) against those it no longer offers: a one-off comparison.
The benchmark that ran it lives in git (last at 663587b); its file, logit_layout.json, is kept and rendered here."""

SECTIONS = [dict(title="The adaptive softmax's logit layout and memory, ms", command="python -m benchmarks.logit_layout "
                 "--glibc-malloc (at 7538d6e)", files=["logit_layout"],
                 columns={k: k for k in ("V", "cutoffs", "tied", "targets", "layout")} | {
                     "head width": "head_width", "ms": "ms:,.2f", "/ default": "over_default:.2f"},
                 text="One training step's output layer and loss (N = 3,360, d = 400), forward + backward, median of 5 "
                      "rounds, with glibc's own malloc settings as a plain fairseq-train run has them. `plain`: logits "
                      "as wide as their classes; `aligned`: rows padded to a multiple of 8; `unbuffered`: aligned, and "
                      "tails of at most 8 features multiplied features-major; `default`: unbuffered, and the logits kept "
                      "from step to step. `shortlist` targets time the head alone.")]
