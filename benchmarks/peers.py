"""qrnn_lm against the models a user would otherwise pick in fairseq, at equal wall-clock training time
on WikiText-2 (issue #39): fairseq's transformer_lm with adaptive input and adaptive softmax, and lstm_lm
with adaptive_loss. Every run trains for BUDGET_MINUTES on THREADS cores, timed by this plugin's
``--lr-scheduler timed_polynomial_decay`` with ``--stop-time-hours`` = the budget (it takes any fairseq
arch once --user-dir is given), at each model's LR grid point; the best by validation perplexity
(blocks) is its row, scored on test under fairseq's blocks protocol (and the classic one for qrnn_lm).

    python -m benchmarks.peers            # ~4 h on 2 cores, resumable: run it again after a stop
    python -m benchmarks.peers --quick    # a few seconds of each model on a tiny corpus; writes nothing

The clock. Both fairseq's --stop-time-hours guard and the schedule count wall time from the trainer's
start, so validation and checkpoint writes inside training would be charged to the budget, unequally
(a transformer scores slower than a QRNN). So no run validates while training (--disable-validation);
each writes its weights (no optimizer state) every few updates (save_interval: about CURVE_POINTS
times a run, a second or so each, charged alike), and every score, the validation curve's included, is
fairseq-eval-lm's after training, under the same protocol for every model, outside the clock.
Rounds: the cases run one grid point of every model back to back, so a drift of the machine's speed
reaches all models alike; the bf16 row (where the CPU has bf16 instructions) comes last, at the fp32
row's best LR. Each run keeps a record (benchmarks/peers_runs.py) under --work-dir; a stopped
invocation skips the finished runs and redoes the unfinished one from scratch, and a run recorded on
another machine kind is redone, not mixed.

The models. (1) qrnn_lm as recipes/wikitext2/run.sh trains it: presets.MAIN_JOB's arch, train_flags,
batch and train.sh's Adam flags, at MAIN_JOB's fp32_hidden_size for the fp32 rows (run.sh's choice on
a CPU without bf16 instructions, and the like-for-like comparison everywhere) and at the preset width
with --cpu-autocast-bf16 for the bf16 row (run.sh's choice on a bf16 CPU). (2) transformer_lm, tied as
fairseq's transformer_lm_wiki103 (adaptive input and softmax sharing embeddings and projections, no
final norm), Adam betas (0.9, 0.98), weight decay 0.01 and no clipping as fairseq's language-model
example, 512-token blocks (the example's, and the blocks protocol's) in batches of 6 (3,072 tokens an
update, the QRNN's 3,360 nearly). Sized by words/s: 4 layers x 256 (FFN 1,024, 4 heads) trained at 510
words/s in a 20-update fairseq-train run niced beside another job, where the fp32 QRNN managed about 1,500:
a third of the QRNN's 4,300 uncontended (wikitext2_main_avx2.json) is about 1,500 words/s, so 20 minutes
give it about 1.8M tokens (nearly one epoch of WikiText-2's 2.1M, about 600 updates). 512 wide costs about
4x the FLOPs a token (12 d^2 a layer) and would see a quarter of an epoch; narrower than 256, or fewer
than 4 layers, leaves too little model. The real run records each model's words/s (train_wps). Dropouts are
the wiki103 recipe's scaled by TRANSFORMER_DROPOUT_SCALE for a model 4x narrower trained about one epoch;
warm-up is the example's share (4,000 of 50,000 updates) of the expected updates. (3) lstm_lm +
adaptive_loss, sized as the fp32 QRNN (its layers, embedding width, hidden width and output dropout),
train.sh's Adam flags and batch; scoring lifts its position limit (its training blocks' length) to the
blocks protocol's (LONGER_BLOCKS). Adaptive-softmax cutoffs are the QRNN preset's, as word ids of
the dictionary, for all three. Same seed, data, dictionary, threads.

The goal (judged on the results file here, never in the package): qrnn_lm's fp32 test perplexity
(blocks) at most GOAL_VS_BEST_PEER times the better peer's.
"""

import os
from tempfile import TemporaryDirectory

from benchmarks import harness, peers_runs, zipf_corpus
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.modules import parse_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES, EVAL_PROTOCOLS, MAIN_JOB

NAME = "peers"
BUDGET_MINUTES = 20  # of training per run: the 15-25, and 10 runs fit its 4.5 h with the evaluations
MODELS = ("qrnn_lm", "transformer_lm", "lstm_lm")
GRID = ("0.5x", "1x", "2x")  # three values around each recipe's learning rate
QRNN_LRS = {g: f * MAIN_JOB["lr"] for g, f in zip(GRID, (0.5, 1.0, 2.0))}
LRS = {"qrnn_lm": QRNN_LRS, "lstm_lm": QRNN_LRS,
       "transformer_lm": dict(zip(GRID, (2.5e-4, 5e-4, 1e-3)))}  # around fairseq's LM example's 5e-4
BEST_FP32 = "fp32 best"  # the bf16 row's grid point
GOAL_VS_BEST_PEER = 0.85
CURVE_POINTS = 6  # interval checkpoints scored for each best run's curve, the last checkpoint besides
SEED = 1
LOG_INTERVAL = 50  # train.sh's
NO_EPOCH_SAVES = 10**6  # --save-interval in epochs, never reached: only the interval and final saves happen
# recipes/wikitext2/train.sh's Adam flags (OPTIMIZER=adam), which presets.py does not hold.
TRAIN_SH_ADAM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.999)", "--clip-norm", "0.25",
                 "--warmup-updates", "100", "--end-learning-rate", "0.0001"]
PRESET = ARCHITECTURES[MAIN_JOB["arch"]]
# fairseq's transformer_lm_wiki103 dropouts, and the share kept for a 4x narrower model trained about one epoch.
WIKI103_DROPOUTS = {"dropout": 0.3, "attention-dropout": 0.1, "activation-dropout": 0.1, "adaptive-softmax-dropout": 0.2}
TRANSFORMER_DROPOUT_SCALE = 1 / 3
TRANSFORMER = dict(layers=4, width=256, heads=4, ffn_factor=4, tokens_per_sample=512, batch_size=6)
# The transformer's learning rate ends at the share of its peak that train.sh's end (1e-4) is of the main job's.
END_LR_SHARE = float(TRAIN_SH_ADAM[-1]) / MAIN_JOB["lr"]
WARMUP_SHARE = 4000 / 50000  # fairseq's language-model example: warm-up updates over its updates
# Expected words/s on 2 cores; they set the transformer's warm-up and each run's checkpoint interval, nothing
# else. qrnn_lm: the fp32 main job's on AVX2 (wikitext2_main_avx2.json), bf16 at the preset width
# (width_throughput.json); transformer_lm: the sizing above; lstm_lm: lm_throughput.json's 4 x 300 (3,267), halved
# for 4 x 500 with a 400-wide embedding.
EXPECTED_WPS = {("qrnn_lm", "fp32"): 4300, ("qrnn_lm", "bf16"): 10000, ("transformer_lm", "fp32"): 1500,
                ("lstm_lm", "fp32"): 1600}
# --quick: a tiny Zipf corpus, tiny widths, seconds of training; the curve is the last checkpoint's point alone.
QUICK = dict(budget_s=3, curve_points=0, save_interval=50, log_interval=5,
             qrnn=dict(embed=16, hidden=24, layers=2), transformer=dict(layers=1, width=16, heads=2), lstm_layers=2)
SECONDS_PER_HOUR = 3600
# fairseq's lstm_lm limits positions to its training blocks' length: the blocks protocol reads longer ones.
LONGER_BLOCKS = {"lstm_lm": ["--model-overrides", f"{{'max_target_positions': {EVAL_PROTOCOLS['block_tokens']}}}"]}
SETTINGS = {}  # main's: data, work dir, quick


def cutoffs(data: str) -> str:
    """The QRNN preset's cutoffs as word ids of ``data``'s dictionary (what fairseq's models take)."""
    return ",".join(map(str, parse_cutoffs(PRESET["adaptive_softmax_cutoff"], zipf_corpus.dictionary_size(data))))


def expected_updates(model: str, precision: str, tokens_per_update: int) -> int:
    return int(BUDGET_MINUTES * 60 * EXPECTED_WPS[(model, precision)] / tokens_per_update)


def model_flags(model: str, precision: str, lr: float, data: str, quick: bool) -> list:
    """fairseq-train's flags for one run, but for the data, save dir and log format."""
    ids, div = cutoffs(data), str(PRESET["adaptive_softmax_div_value"])
    qrnn = QUICK["qrnn"] if quick else dict(embed=PRESET["embed_dim"], hidden=MAIN_JOB["fp32_hidden_size"],
                                             layers=PRESET["num_layers"])
    batch = ["--batch-size", str(MAIN_JOB["batch_size"]), "--tokens-per-sample", str(MAIN_JOB["tokens_per_sample"])]
    if model == "qrnn_lm":
        flags = ["--arch", MAIN_JOB["arch"], *MAIN_JOB["train_flags"].split(), "--criterion", "adaptive_softmax",
                 *TRAIN_SH_ADAM, *batch]
        flags += ["--cpu-autocast-bf16"] if precision == "bf16" else ["--hidden-size", str(qrnn["hidden"])]
        flags += ["--embed-dim", str(qrnn["embed"]), "--num-layers", str(qrnn["layers"])] * quick
        flags += ["--hidden-size", str(qrnn["hidden"])] * (quick and precision == "bf16")
    elif model == "lstm_lm":
        flags = ["--arch", "lstm_lm", "--decoder-embed-dim", str(qrnn["embed"]), "--decoder-hidden-size",
                 str(qrnn["hidden"]), "--decoder-out-embed-dim", str(qrnn["embed"]), "--decoder-layers",
                 str(QUICK["lstm_layers"] if quick else qrnn["layers"]), "--dropout", str(PRESET["dropout"]),
                 "--adaptive-softmax-cutoff", ids, "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp",
                 *TRAIN_SH_ADAM, *batch]
    else:
        t = {**TRANSFORMER, **(QUICK["transformer"] if quick else {})}
        tokens = t["tokens_per_sample"] * t["batch_size"]
        warmup = round(WARMUP_SHARE * expected_updates(model, precision, tokens))
        flags = ["--arch", "transformer_lm", "--decoder-layers", str(t["layers"]),
                 *(a for k in ("embed", "input", "output") for a in (f"--decoder-{k}-dim", str(t["width"]))),
                 "--decoder-ffn-embed-dim", str(t["ffn_factor"] * t["width"]), "--decoder-attention-heads",
                 str(t["heads"]), "--adaptive-input", "--adaptive-input-cutoff", ids, "--adaptive-input-factor", div,
                 "--adaptive-softmax-cutoff", ids, "--adaptive-softmax-factor", div, "--tie-adaptive-weights",
                 "--tie-adaptive-proj", "--no-decoder-final-norm",
                 *(a for k, p in WIKI103_DROPOUTS.items() for a in (f"--{k}", f"{p * TRANSFORMER_DROPOUT_SCALE:.3g}")),
                 "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp",
                 "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.01", "--clip-norm", "0.0",
                 "--warmup-updates", str(warmup), "--end-learning-rate", f"{lr * END_LR_SHARE:.3g}",
                 "--batch-size", str(t["batch_size"]), "--tokens-per-sample", str(t["tokens_per_sample"])]
    tokens = MAIN_JOB["batch_size"] * MAIN_JOB["tokens_per_sample"] if model != "transformer_lm" else \
        TRANSFORMER["tokens_per_sample"] * TRANSFORMER["batch_size"]
    interval = QUICK["save_interval"] if quick else max(1, expected_updates(model, precision, tokens) // CURVE_POINTS)
    budget_h = (QUICK["budget_s"] if quick else BUDGET_MINUTES * 60) / SECONDS_PER_HOUR
    return [*flags, "--task", "language_modeling_freqsorted", "--lr", f"{lr:g}",
            "--lr-scheduler", "timed_polynomial_decay", "--stop-time-hours", f"{budget_h:.6g}", "--seed", str(SEED),
            "--cpu", "--disable-validation", "--save-interval-updates", str(interval), "--save-interval",
            str(NO_EPOCH_SAVES), "--no-save-optimizer-state",
            "--log-interval", str(QUICK["log_interval"] if quick else LOG_INTERVAL),
            # train.sh's data-loading worker, but in --quick, whose second-long runs could end while it was alive
            *["--num-workers", "0"] * quick]


def run_name(model: str, precision: str, grid: str) -> str:
    return f"{model}_{precision}_lr{grid.replace(' ', '_')}"


def cases(quick: bool, bf16: bool) -> list:
    """In rounds: one grid point of every model back to back; then the bf16 row, at the fp32 row's best LR."""
    grid = GRID[1:2] if quick else GRID
    rounds = [dict(model=m, precision="fp32", grid=g) for g in grid for m in MODELS]
    return rounds + [dict(model="qrnn_lm", precision="bf16", grid=BEST_FP32)] * bf16


def best(measured: dict, model: str, precision: str):
    """The run name of ``measured`` (name -> metrics) with the lowest validation perplexity (blocks)."""
    runs = [n for n in measured if n.startswith(f"{model}_{precision}_")]
    return min(runs, key=lambda n: measured[n]["valid_ppl_blocks"]) if runs else None


MEASURED = {}  # run name -> metrics, in the order measured: the bf16 row reads the fp32 rows'


def task_flags(model: str) -> list:
    return peers_runs.PLUGIN_TASK + LONGER_BLOCKS.get(model, [])


def measure(model: str, precision: str, grid: str) -> dict:
    if grid == BEST_FP32:
        chosen = best(MEASURED, model, "fp32")
        if chosen is None:
            raise ValueError("the bf16 row takes the fp32 row's best learning rate: run the fp32 cases first")
        lr = MEASURED[chosen]["lr"]
    else:
        lr = LRS[model][grid]
    name, data, quick = run_name(model, precision, grid), SETTINGS["data"], SETTINGS["quick"]
    evals = [("valid", "blocks"), ("test", "blocks")] + [("test", "classic")] * (model == "qrnn_lm")
    metrics = peers_runs.train_and_score(
        os.path.join(SETTINGS["work"], name), data, model_flags(model, precision, lr, data, quick), evals,
        f"python -m benchmarks.peers{' --quick' * quick}", SETTINGS["kind"], task_flags(model))
    MEASURED[name] = {**metrics, "lr": lr}
    return MEASURED[name]


def finish(measured: list) -> list:
    """Mark each model's best run, score its validation curve, and draw the curves; the goal is judged on
    the file (``judge``), so none is returned."""
    by_name = {run_name(**c["params"]): c["metrics"] for c in measured}
    curves = {}
    for c in measured:
        p, m = c["params"], c["metrics"]
        m["best"] = best(by_name, p["model"], p["precision"]) == run_name(**p)
        if m["best"]:
            run_dir = os.path.join(SETTINGS["work"], run_name(**p))
            m["curve_minutes"], m["curve_valid_ppl"] = peers_runs.curve(
                run_dir, SETTINGS["data"], QUICK["curve_points"] if SETTINGS["quick"] else CURVE_POINTS,
                (round(m["clock_s"] / peers_runs.SECONDS_PER_MINUTE, 2), m["valid_ppl_blocks"]), task_flags(p["model"]))
            curves[f"{p['model']} ({p['precision']}, lr {m['lr']:g})"] = (m["curve_minutes"], m["curve_valid_ppl"])
    plot(curves, SETTINGS["png"])
    return []


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (minutes, ppl) in curves.items():
        ax.plot(minutes, ppl, marker="o", label=label)
    ax.set(xlabel="training wall-clock minutes (2 CPU cores)", ylabel="validation perplexity (blocks)", yscale="log",
           title=f"Equal time ({BUDGET_MINUTES} min): each model's best run of its LR grid")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def judge(record: dict) -> list:
    """qrnn_lm's fp32 test perplexity (blocks) over the better peer's, both each model's best of its grid."""
    rows = {c["params"]["model"]: c["metrics"] for c in record["cases"]
            if c["params"]["precision"] == "fp32" and c["metrics"].get("best")}
    peers = [rows[m]["test_ppl_blocks"] for m in MODELS[1:] if m in rows]
    ratio = rows["qrnn_lm"]["test_ppl_blocks"] / min(peers) if "qrnn_lm" in rows and peers else None
    return [harness.goal(f"qrnn_lm's test perplexity (blocks, fp32) over the best peer's at {BUDGET_MINUTES} min, "
                         "at most", ratio, GOAL_VS_BEST_PEER, at_most=True)]


SECTIONS = [dict(
    title="Against fairseq's transformer_lm and lstm_lm at equal training time", command="python -m benchmarks.peers",
    files=[NAME], goals=judge,
    text=f"Every run {BUDGET_MINUTES} min of training on 2 cores, its learning rate decaying over that time; each "
         "model's best of its 3-point LR grid by validation perplexity is marked best. How each model was sized, and "
         "the clock's rule: benchmarks/peers.py.\n\n![Validation perplexity against training minutes, each model's "
         "best run](../benchmarks/results/peers.png)",
    columns={"model": "model", "precision": "precision", "grid": "grid", "lr": "lr:g", "parameters": "parameters",
             "train words/s": "train_wps:,.0f", "updates": "updates", "valid ppl (blocks)": "valid_ppl_blocks",
             "test ppl (blocks)": "test_ppl_blocks", "test ppl (classic)": "test_ppl_classic", "best": "best"})]
# Until the first real run writes the results file, docs/results.md renders without this benchmark.
if not os.path.isfile(os.path.join(harness.ROOT, "benchmarks", "results", f"{NAME}.json")):
    SECTIONS = []


def main(argv=None):
    from fairseq_adasoft.provenance import machine_info

    p = harness.arguments()
    p.add_argument("--work-dir", default=os.path.join("checkpoints", "peers"),
                   help="each run's save dir and record, relative to the checkout (default %(default)s; "
                        "--quick: a temporary one)")
    args = p.parse_args(argv)
    bf16 = cpu_has_native_bf16()
    with TemporaryDirectory() as scratch:
        work = scratch if args.quick else os.path.join(harness.ROOT, args.work_dir)
        data = zipf_corpus.prepare(os.path.join(work, "corpus"), **zipf_corpus.QUICK["wikitext2"], workers=1) \
            if args.quick else harness.need(harness.DATA)
        name = f"{NAME}_{args.tag}" if args.tag else NAME
        SETTINGS.update(data=data, work=work, quick=args.quick, kind=peers_runs.machine_kind(machine_info()),
                        png=os.path.join(work if args.quick else harness.RESULTS_DIR, f"{name}.png"))
        MEASURED.clear()
        return harness.main(NAME, cases(args.quick, bf16), measure, finish, argv=argv, args=args)


if __name__ == "__main__":
    main()
