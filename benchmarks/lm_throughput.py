"""End-to-end training words/s (fairseq's own log, the first interval dropped) on WikiText-2:
qrnn_lm + adaptive softmax, qrnn_lm + full softmax, fairseq's lstm_lm +
adaptive_loss (which needs --ddp-backend legacy_ddp) and lstm_lm + cross_entropy,
each a real fairseq-train run at the seed experiment's sizes and the main job's batch.

    python -m benchmarks.lm_throughput [--tag avx2] [--quick]

Needs recipes/wikitext2/prepare.sh to have run (data-bin/wikitext-2).
"""

from benchmarks.harness import goal, main, ratio, train_wps
from fairseq_adasoft.modules import parse_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES

SEED = ARCHITECTURES["qrnn_lm_wikitext2_seed"]
SIZE, LAYERS = str(SEED["hidden_size"]), str(SEED["num_layers"])
# The seed's cutoffs as word ids of WikiText-2's dictionary (33,276 words + 4 specials), the form lstm_lm takes.
CUTOFFS = ",".join(map(str, parse_cutoffs(SEED["adaptive_softmax_cutoff"], 33_280)))
UPDATES, QUICK_UPDATES = 60, 20  # logged every 10
QRNN = ["--arch", "qrnn_lm", "--embed-dim", SIZE, "--hidden-size", SIZE, "--num-layers", LAYERS, "--dropout", "0.1",
        "--dropout-input", "0.1", "--dropout-hidden", "0.1", "--dropout-embed", "0", "--weight-drop", "0"]
LSTM = ["--arch", "lstm_lm", "--decoder-embed-dim", SIZE, "--decoder-hidden-size", SIZE,
        "--decoder-out-embed-dim", SIZE, "--decoder-layers", LAYERS, "--dropout", "0.1"]
SETUPS = {
    "qrnn_lm+adaptive_softmax": QRNN + ["--criterion", "adaptive_softmax", "--adaptive-softmax-cutoff", CUTOFFS],
    "qrnn_lm+full_softmax": QRNN + ["--criterion", "adaptive_softmax"],
    "lstm_lm+adaptive_loss": LSTM + ["--criterion", "adaptive_loss", "--adaptive-softmax-cutoff", CUTOFFS,
                                     "--ddp-backend", "legacy_ddp"],
    "lstm_lm+cross_entropy": LSTM + ["--criterion", "cross_entropy"],
}
CASES = [dict(setup=s) for s in SETUPS]
GOAL_VS_LSTM = 1.5  # qrnn_lm + adaptive softmax's words/s over lstm_lm + adaptive_loss's


def measure(setup: str, updates: int = UPDATES) -> dict:
    return train_wps(SETUPS[setup], updates)


def goals(cases):
    return [goal(f"qrnn_lm+adaptive_softmax >= {GOAL_VS_LSTM}x lstm_lm+adaptive_loss words/s",
                 ratio(cases, "words_per_s", {"setup": "qrnn_lm+adaptive_softmax"}, {"setup": "lstm_lm+adaptive_loss"}),
                 GOAL_VS_LSTM)]


SECTIONS = [dict(title="Training words/s through fairseq-train", command="python -m benchmarks.lm_throughput",
                 files=["lm_throughput", "lm_throughput_avx2"], columns={"setup": "setup", "words/s": "words_per_s:,.0f"},
                 text=f"The seed's 4 x {SIZE} QRNN or LSTM, the main job's batch, {UPDATES} updates; the goal's value "
                      "is qrnn_lm + adaptive softmax's words/s over lstm_lm + adaptive_loss's.")]

if __name__ == "__main__":
    main("lm_throughput", CASES, measure, goals,
         quick_cases=[dict(setup="qrnn_lm+adaptive_softmax", updates=QUICK_UPDATES)])
