"""End-to-end training words/s (fairseq's own log, the first interval dropped) on WikiText-2.

Default: qrnn_lm + adaptive softmax, qrnn_lm + full softmax, fairseq's lstm_lm +
adaptive_loss (which needs --ddp-backend legacy_ddp) and lstm_lm + cross_entropy at the seed's
sizes. --widths: the main job's model as run.sh trains it (bf16 autocast where the CPU has bf16
matmuls) at each --hidden-size, and the epochs of WikiText-2 its words/s fit in run.sh's hour,
an upper bound (validation and checkpoints not timed): width_throughput.json.

    python -m benchmarks.lm_throughput [--widths] [--tag avx2] [--quick]   # needs data-bin/wikitext-2
"""

from benchmarks.harness import DATA, arguments, find, goal, main, median, need, ratio, train_wps
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.modules import parse_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB
from fairseq_adasoft.record import train_tokens

SEED = ARCHITECTURES["qrnn_lm_wikitext2_seed"]
SIZE, LAYERS = str(SEED["hidden_size"]), str(SEED["num_layers"])
# The seed's cutoffs as word ids of WikiText-2's dictionary (33,276 words + 4 specials), the form lstm_lm takes.
CUTOFFS = ",".join(map(str, parse_cutoffs(SEED["adaptive_softmax_cutoff"], 33_280)))
QRNN = f"--arch qrnn_lm --embed-dim {SIZE} --hidden-size {SIZE} --num-layers {LAYERS} --dropout 0.1 --dropout-input 0.1 " \
    "--dropout-hidden 0.1 --dropout-embed 0 --weight-drop 0".split()
LSTM = f"--arch lstm_lm --decoder-embed-dim {SIZE} --decoder-hidden-size {SIZE} --decoder-out-embed-dim {SIZE} " \
    f"--decoder-layers {LAYERS} --dropout 0.1".split()
SETUPS = {
    "qrnn_lm+adaptive_softmax": QRNN + ["--criterion", "adaptive_softmax", "--adaptive-softmax-cutoff", CUTOFFS],
    "qrnn_lm+full_softmax": QRNN + ["--criterion", "adaptive_softmax"],
    "lstm_lm+adaptive_loss": LSTM + ["--criterion", "adaptive_loss", "--adaptive-softmax-cutoff", CUTOFFS,
                                     "--ddp-backend", "legacy_ddp"],
    "lstm_lm+cross_entropy": LSTM + ["--criterion", "cross_entropy"],
}
RUN_SH = ["--arch", MAIN_JOB["arch"], *MAIN_JOB["train_flags"].split(), "--criterion", "adaptive_softmax",
          "--lr", str(MAIN_JOB["lr"])]  # run.sh's model and peak learning rate; the width is a case
HOURS, UPDATES, GOAL_VS_LSTM = MAIN_JOB["stop_time_hours"], 60, 1.5
PRECISION = "bf16" if cpu_has_native_bf16() else "fp32"
CASES = [dict(setup=s) for s in SETUPS]
WIDTH_CASES = [dict(hidden_size=w, precision=PRECISION) for w in (500, 600, 800, 1000, 1200)]


def epochs_in_hours(words_per_s: float, tokens_per_epoch: int, hours: float = HOURS) -> float:
    return round(hours * 3600 * words_per_s / tokens_per_epoch, 2)


def measure(setup: str = None, hidden_size: int = None, precision: str = None, updates: int = UPDATES) -> dict:
    if setup:
        return train_wps(SETUPS[setup], updates)
    m = train_wps([*RUN_SH, *["--cpu-autocast-bf16"] * (precision == "bf16"), "--hidden-size", str(hidden_size)], updates)
    return {**m, "epochs_in_hours": epochs_in_hours(median(m["words_per_s"]), train_tokens(need(DATA)))}


def goals(cases):  # each setup's words/s over lstm_lm + adaptive_loss's, and the goal on qrnn_lm + adaptive softmax's
    if "setup" not in cases[0]["params"]:
        return []
    for c in cases:
        c["metrics"]["over_lstm_adaptive_loss"] = ratio(cases, "words_per_s", c["params"], {"setup": "lstm_lm+adaptive_loss"})
    return [goal(f"qrnn_lm+adaptive_softmax >= {GOAL_VS_LSTM}x lstm_lm+adaptive_loss words/s",
                 find(cases, setup="qrnn_lm+adaptive_softmax")["over_lstm_adaptive_loss"], GOAL_VS_LSTM)]


SECTIONS = [dict(title="Training words/s through fairseq-train", command="python -m benchmarks.lm_throughput",
                 files=["lm_throughput", "lm_throughput_avx2"], columns={"setup": "setup", "words/s": "words_per_s:,.0f",
                                                                        "/ lstm_lm + adaptive_loss": "over_lstm_adaptive_loss:.2f"},
                 text=f"The seed's 4 x {SIZE} QRNN or LSTM, the main job's batch, {UPDATES} updates; the target's value "
                      "is qrnn_lm + adaptive softmax's words/s over lstm_lm + adaptive_loss's."),
            dict(title="The main job's model at each QRNN width", command="python -m benchmarks.lm_throughput --widths",
                 files=["width_throughput"], columns={"QRNN width": "hidden_size", "precision": "precision",
                                                      "words/s": "words_per_s:,.0f", f"epochs in {HOURS} h": "epochs_in_hours:.2f"},
                 text=f"{UPDATES} updates per width; epochs = {HOURS} h x words/s / WikiText-2's train tokens.")]

if __name__ == "__main__":
    p = arguments()
    p.add_argument("--widths", action="store_true", help="the main job's model at each width: width_throughput.json")
    args = p.parse_args()
    cases = WIDTH_CASES if args.widths else CASES
    main("width_throughput" if args.widths else "lm_throughput", cases, measure, goals, args=args,
         quick_cases=[dict(c, updates=20, **({"hidden_size": 64} if args.widths else {})) for c in cases[:1]])
