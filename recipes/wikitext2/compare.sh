#!/usr/bin/env bash
# The seed experiment: the seed's QRNN (the qrnn_lm_wikitext2_seed preset)
# trained twice with the same seed, optimizer and epochs, once with the
# adaptive softmax (the architecture's cutoffs, [V/15, 3V/15]) and once with a
# full softmax; both evaluated with fairseq-eval-lm.
#
# Settings: presets.COMPARE_JOB's (fairseq_adasoft/presets.py): the preset, Adam's
# peak learning rate, the epochs and the wall-clock guard.
# Optimizer: Adam by default. OPTIMIZER=seed gives the seed's SGD
# with Nesterov momentum (lr 1), which learns too slowly for a CPU budget: two
# epochs would compare two models still near unigram perplexity.
#
# Hardware: 2 CPU cores: the full softmax's epochs take several times the
#           adaptive one's (benchmarks/results/lm_throughput.json), the default
#           2 epochs under an hour; a GPU trains both with --fp16.
# Expected: adaptive >= 3x the full softmax's training words/s, test
#           perplexity within 4% (the seed's goals); the recorded run:
#           benchmarks/results/wikitext2_compare.json.
# Result:   $RESULTS_DIR/wikitext2_compare[_quick].json; checkpoints and logs
#           under $CKPT_ROOT/compare-{adaptive,full}[-quick]. Finished runs are
#           skipped, so a re-run only redoes what is missing.
#
# Knobs (environment): EPOCHS, LR, OPTIMIZER=adam|seed, QUICK=1 (150
# updates each, a few minutes), common.sh's (DATA_BIN, CKPT_ROOT, VENV_BIN, ...),
# train.sh's; extra arguments go on to fairseq-train.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_presets
probe_cuda  # once, for every train.sh and eval.sh below

EPOCHS=${EPOCHS:-$PRESET_COMPARE_EPOCHS}
NAME=wikitext2_compare${QUICK_SUFFIX//-/_}
OPTIMIZER=${OPTIMIZER:-adam}
export QUICK EPOCHS ARCH=$PRESET_COMPARE_ARCH OPTIMIZER LR=${LR:-$PRESET_COMPARE_LR} SCHEDULE=${SCHEDULE:-epochs}
export STOP_TIME_HOURS=${STOP_TIME_HOURS:-$PRESET_COMPARE_STOP_TIME_HOURS}  # never cut one run short of the other's epochs

for SOFTMAX in adaptive full; do
  SAVE_DIR=$CKPT_ROOT/compare-$SOFTMAX$QUICK_SUFFIX
  SOFTMAX=$SOFTMAX SAVE_DIR=$SAVE_DIR bash "$HERE/train.sh" "$@"
  SAVE_DIR=$SAVE_DIR SUBSET=valid bash "$HERE/eval.sh"
  SAVE_DIR=$SAVE_DIR SUBSET=test bash "$HERE/eval.sh"
done

cd "$ROOT"
"$PY" -m fairseq_adasoft.record comparison --results-dir "$RESULTS_DIR" \
  --name "$NAME" \
  --command "QUICK=$QUICK EPOCHS=$EPOCHS OPTIMIZER=$OPTIMIZER bash recipes/wikitext2/compare.sh $*" \
  --optimizer "$OPTIMIZER" \
  --adaptive "$CKPT_ROOT/compare-adaptive$QUICK_SUFFIX" \
  --full "$CKPT_ROOT/compare-full$QUICK_SUFFIX"
