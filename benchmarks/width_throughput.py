"""How many epochs of WikiText-2 each QRNN width fits in run.sh's hour, on this machine.

The hour's perplexity is a trade between a wider model and more passes over
the data. This measures the trade's second half: the end-to-end training
words/s (fairseq's own log) of the main job's model as
recipes/wikitext2/run.sh trains it, at each ``--hidden-size``, and the epochs
those words/s give in ``--hours`` of training. Validation and checkpoints are
left out, so the epochs are an upper bound.

    python -m benchmarks.width_throughput [--widths 500,600,800,1000,1200] [--updates 60] [--tag NAME]

On a CPU with bf16 matmul instructions the model runs with
``--cpu-autocast-bf16``, as run.sh does; elsewhere in fp32.
Needs recipes/wikitext2/prepare.sh to have run (data-bin/wikitext-2).
"""

import argparse
import os

from benchmarks.common import DATA, tagged, write_result
from benchmarks.lm_throughput import STREAMS, TOKENS_PER_SAMPLE, run
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.presets import MAIN_JOB
from fairseq_adasoft.record import train_tokens

SECONDS_PER_HOUR = 3600
# run.sh's model (the main job's architecture, with its cutoffs, and run.sh's
# MAIN_FLAGS) and its peak learning rate; the width is added per run.
RUN_SH_MODEL = ["--arch", MAIN_JOB["arch"], *MAIN_JOB["train_flags"].split(),
                "--criterion", "adaptive_softmax", "--lr", str(MAIN_JOB["lr"])]
BF16 = ["--cpu-autocast-bf16"]


def epochs_in(hours: float, words_per_s: float, tokens_per_epoch: int) -> float:
    return hours * SECONDS_PER_HOUR * words_per_s / tokens_per_epoch


def parse_widths(text: str) -> list:
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--widths must be comma-separated integers, e.g. 500,800, got '{text}'") from None
    if not widths or min(widths) < 1:
        raise ValueError(f"--widths must be positive hidden sizes, got '{text}'")
    return widths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="500,600,800,1000,1200",
                        help="comma-separated --hidden-size values (every QRNN layer but the last)")
    parser.add_argument("--updates", type=int, default=60, help="updates per width (log every 10)")
    parser.add_argument("--hours", type=float, default=MAIN_JOB["stop_time_hours"],
                        help="training time to count epochs in (run.sh's hour guard, STOP_TIME_HOURS)")
    parser.add_argument("--tag", default="", help="suffix of the results file's name, e.g. avx2")
    args = parser.parse_args()
    widths = parse_widths(args.widths)
    if not os.path.isfile(os.path.join(DATA, "dict.txt")):
        raise ValueError(f"{DATA} is missing: run recipes/wikitext2/prepare.sh first")
    bf16 = cpu_has_native_bf16()
    tokens = train_tokens(DATA)
    results = {}
    for width in widths:
        entry = run(f"width {width}", RUN_SH_MODEL + (BF16 if bf16 else []) + ["--hidden-size", str(width)],
                    args.updates)
        entry["epochs_in_hours"] = round(epochs_in(args.hours, entry["wps"]["median"], tokens), 2)
        results[str(width)] = entry
        print(f"4 x {width:5d}: median {entry['wps']['median']:8.0f} words/s, "
              f"{entry['epochs_in_hours']:5.2f} epochs in {args.hours} h", flush=True)
    name, command = tagged("width_throughput",
                           f"python -m benchmarks.width_throughput --widths {args.widths} "
                           f"--updates {args.updates} --hours {args.hours}", args.tag)
    print(write_result(name, {
        "settings": {"precision": "bf16 (--cpu-autocast-bf16)" if bf16 else "fp32", "hours": args.hours,
                     "train_tokens_per_epoch": tokens, "tokens_per_update": STREAMS * TOKENS_PER_SAMPLE, "updates": args.updates,
                     "note": "epochs_in_hours = hours x median words/s / train tokens; validation and "
                             "checkpoints are not timed, so run.sh's hour holds a little less"},
        "results": results,
    }, command=command))


if __name__ == "__main__":
    main()
