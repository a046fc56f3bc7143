"""How many epochs of WikiText-2 each QRNN width fits in run.sh's hour, on this machine.

The hour's perplexity trades a wider model against more passes over the data.
This measures the second half: fairseq-train's words/s of the main job's model
as recipes/wikitext2/run.sh trains it (bf16 autocast where the CPU has bf16
matmuls), at each --hidden-size, and the epochs those words/s give in the
hour. Validation and checkpoints are not timed, so the epochs are an upper bound.

    python -m benchmarks.width_throughput [--tag NAME] [--quick]

Needs recipes/wikitext2/prepare.sh to have run (data-bin/wikitext-2).
"""

from benchmarks.harness import DATA, main, median, need, train_wps
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.presets import MAIN_JOB
from fairseq_adasoft.record import train_tokens

HOURS = MAIN_JOB["stop_time_hours"]  # run.sh's hour guard
UPDATES = 60
# run.sh's model (the main job's architecture and flags) and peak learning rate; the width is a case.
RUN_SH_MODEL = ["--arch", MAIN_JOB["arch"], *MAIN_JOB["train_flags"].split(), "--criterion", "adaptive_softmax",
                "--lr", str(MAIN_JOB["lr"])]
PRECISION = "bf16" if cpu_has_native_bf16() else "fp32"
CASES = [dict(hidden_size=w, precision=PRECISION) for w in (500, 600, 800, 1000, 1200)]


def epochs_in_hours(words_per_s: float, tokens_per_epoch: int, hours: float = HOURS) -> float:
    return round(hours * 3600 * words_per_s / tokens_per_epoch, 2)


def measure(hidden_size: int, precision: str, updates: int = UPDATES) -> dict:
    flags = [*RUN_SH_MODEL, *(["--cpu-autocast-bf16"] if precision == "bf16" else []), "--hidden-size", str(hidden_size)]
    m = train_wps(flags, updates)
    return {**m, "epochs_in_hours": epochs_in_hours(median(m["words_per_s"]), train_tokens(need(DATA)))}


SECTIONS = [dict(title="The main job's model at each QRNN width", command="python -m benchmarks.width_throughput",
                 files=["width_throughput"], columns={"QRNN width": "hidden_size", "precision": "precision",
                                                      "words/s": "words_per_s:,.0f",
                                                      f"epochs in {HOURS} h": "epochs_in_hours:.2f"},
                 text=f"{UPDATES} updates per width; epochs in the hour = {HOURS} h x median words/s / WikiText-2's "
                      "train tokens (validation and checkpoints not timed, so run.sh's hour holds a little less).")]

if __name__ == "__main__":
    main("width_throughput", CASES, measure, quick_cases=[dict(hidden_size=64, precision=PRECISION, updates=20)])
