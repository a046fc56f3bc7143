"""The named configurations, in one place: the hyper-parameters each ``--arch``
preset sets, the WikiText-2 main job's training settings and the recipes'
other jobs', the evaluation protocols and dynamic evaluation's defaults. The
architectures, the recipes (through ``python -m fairseq_adasoft.presets``)
and the benchmarks read them from here; no recipe declares a training setting of its own.

Plain Python: no torch or fairseq, so a shell recipe can read it cheaply.
"""

import argparse
import shlex

# Grave et al.'s seed cutoffs [V/15, 3V/15], as fractions of the vocabulary.
SEED_CUTOFFS = "0.0667,0.2"

# --arch name -> the model flags it sets (as dataclass field names); the command line wins.
ARCHITECTURES = {
    # The seed experiment: a 4 x 300 QRNN with the seed's cutoffs.
    "qrnn_lm_wikitext2_seed": dict(
        embed_dim=300, hidden_size=300, num_layers=4,
        adaptive_softmax_cutoff=SEED_CUTOFFS, adaptive_softmax_div_value=4.0,
    ),
    # The main job's model: wider than the seed's, AWD dropouts scaled down for a short run.
    "qrnn_lm_wikitext2": dict(
        embed_dim=400, hidden_size=800, num_layers=4,
        dropout=0.2, dropout_input=0.2, dropout_hidden=0.1, dropout_embed=0.0, weight_drop=0.0,
        adaptive_softmax_cutoff=SEED_CUTOFFS, adaptive_softmax_div_value=4.0,
    ),
    # Merity, Keskar & Socher 2018 ("An Analysis of Neural Language Modeling at Multiple
    # Scales"), with awd-lstm-lm's WikiText-103 splits, whose tails keep the full width.
    "qrnn_lm_wikitext103": dict(
        embed_dim=400, hidden_size=2500, num_layers=4,
        dropout=0.1, dropout_input=0.1, dropout_hidden=0.1, dropout_embed=0.0, weight_drop=0.0,
        adaptive_softmax_cutoff="2800,20000,76000", adaptive_softmax_div_value=1.0,
    ),
}

# The WikiText-2 main job (recipes/wikitext2/run.sh) and its recipes' batch shape.
MAIN_JOB = dict(
    arch="qrnn_lm_wikitext2",
    # What the tuning for the hour kept beyond the architecture (docs/experiments/wikitext2-cpu-hour.md).
    train_flags="--stateful-bptt --tie-adaptive-weights",
    batch_size=48,  # streams per update (the seed's)
    tokens_per_sample=70,  # tokens per stream per update (the seed's BPTT length)
    lr=0.006,  # Adam's peak learning rate
    # The hour guard, short of 1.0 so that fairseq's last validation and save end within the hour.
    stop_time_hours=0.98,
    # On CPUs without bf16 matmul instructions a narrower QRNN fits more epochs in the hour.
    fp32_hidden_size=500,
)

# The other training jobs of the recipes, each what recipes/wikitext2/train.sh is given.
# The seed comparison (recipes/wikitext2/compare.sh): the seed's model, once per softmax, with
# Adam at a lower peak over a fixed number of epochs, and a guard that never cuts one run
# short of the other's epochs.
COMPARE_JOB = dict(arch="qrnn_lm_wikitext2_seed", lr=0.002, epochs=2, stop_time_hours=24)
# The sentencepiece run (recipes/wikitext2/spm.sh): the main job's architecture without its
# train_flags, Adam over epochs.
SPM_JOB = dict(lr=0.002, epochs=6, stop_time_hours=0.6)
# WikiText-103 (recipes/wikitext103/train.sh): awd-lstm-lm's setting (Merity et al. 2018), streams
# per process.
WIKITEXT103_JOB = dict(arch="qrnn_lm_wikitext103", batch_size=60, tokens_per_sample=140, lr=0.001,
                       stop_time_hours=12)

# Evaluation protocols: fairseq's independent blocks, and awd-lstm-lm's classic
# stateful protocol (bptt 70, eval_batch_size 10, test_batch_size 1).
EVAL_PROTOCOLS = dict(
    block_tokens=512, block_batch_size=8,
    classic_tokens=70, classic_valid_streams=10, classic_test_streams=1,
)

# Dynamic evaluation (Krause et al. 2018), the defaults of fairseq-eval-lm --dynamic-eval:
# the authors' AWD-QRNN WikiText-2 setting (their dynamic-evaluation README: --lr 0.00012
# --lamb 0.008 --bptt 20) and their statistics batch (dynamiceval.py's --batch_size 100).
DYNAMIC_EVAL = dict(
    lr=0.00012, decay=0.008, segment=20,
    statistics_streams=100,
    statistics_tokens=None,  # the whole training split, as Krause et al.
    # The recipes' tuner (python -m fairseq_adasoft.tune dynamic-eval): statistics of the whole
    # training split (a fraction underestimates rare words' rms, and its choice scored test worse:
    # docs/dynamic-evaluation.md), each setting scored on valid's first 20,000 tokens.
    tuning_statistics_tokens=None, tuning_tokens=20_000,
)


def shell_assignments() -> str:
    """``NAME=value`` lines of MAIN_JOB, EVAL_PROTOCOLS and SEED_CUTOFFS for a shell's ``eval``,
    and of the other jobs, prefixed by their name (PRESET_COMPARE_LR, ...)."""
    values = {**MAIN_JOB, **EVAL_PROTOCOLS, "seed_cutoffs": SEED_CUTOFFS}
    for prefix, job in (("compare", COMPARE_JOB), ("spm", SPM_JOB), ("wikitext103", WIKITEXT103_JOB)):
        values.update({f"{prefix}_{k}": v for k, v in job.items()})
    return "\n".join(f"PRESET_{k.upper()}={shlex.quote(str(v))}" for k, v in values.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shell", action="store_true", help="print PRESET_*=value lines for a shell's eval")
    args = parser.parse_args()
    if args.shell:
        print(shell_assignments())
    else:
        for name, flags in ARCHITECTURES.items():
            print(name, " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items()))


if __name__ == "__main__":
    main()
