#!/usr/bin/env bash
# The seed experiment: the seed's 4 x 300 QRNN (qrnn_lm_wikitext2_seed)
# trained twice with the same seed, optimizer and epochs, once with the
# adaptive softmax ([V/15, 3V/15], div 4) and once with a full softmax; both
# evaluated with fairseq-eval-lm.
#
# Optimizer: Adam (train.sh's) by default. OPTIMIZER=seed gives the seed's SGD
# with Nesterov momentum (lr 1), which learns too slowly for a CPU budget:
# after 1 epoch its training loss was 9.52 bits against Adam's 8.89, and
# 2 epochs would compare two models still near unigram perplexity.
#
# Hardware: 2 CPU cores: ~4 min per epoch adaptive, ~17 min per epoch full
#           softmax (benchmarks/results/lm_throughput.json), so the default 2
#           epochs take ~45 minutes; a GPU trains both with --fp16.
# Expected: adaptive >= 3x the full softmax's training words/s, test
#           perplexity within 4% (the seed: 132 vs 127 on a GPU, 3.1x faster).
# Result:   benchmarks/results/wikitext2_compare[_quick].json; checkpoints
#           and logs under checkpoints/compare-{adaptive,full}[-quick].
#           Finished runs are skipped, so a re-run only redoes what is missing.
#
# Knobs (environment): EPOCHS (default 2), QUICK=1 (150 updates each, a few
# minutes), DATA_BIN, CKPT_ROOT; extra arguments go on to fairseq-train.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/recipes/wikitext2
QUICK=${QUICK:-0}
EPOCHS=${EPOCHS:-2}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
SUFFIX=$([ "$QUICK" = 1 ] && echo -quick || true)
NAME=wikitext2_compare${SUFFIX//-/_}
OPTIMIZER=${OPTIMIZER:-adam}
export QUICK EPOCHS ARCH=qrnn_lm_wikitext2_seed OPTIMIZER
export STOP_TIME_HOURS=${STOP_TIME_HOURS:-24}  # never cut one run short of the other's epochs

for SOFTMAX in adaptive full; do
  SAVE_DIR=$CKPT_ROOT/compare-$SOFTMAX$SUFFIX
  SOFTMAX=$SOFTMAX SAVE_DIR=$SAVE_DIR bash "$HERE/train.sh" "$@"
  SAVE_DIR=$SAVE_DIR SUBSET=valid bash "$HERE/eval.sh"
  SAVE_DIR=$SAVE_DIR SUBSET=test bash "$HERE/eval.sh"
done

cd "$ROOT"
"${VENV_BIN:-$ROOT/.venv/bin}/python" -m benchmarks.record_comparison \
  --name "$NAME" \
  --command "QUICK=$QUICK EPOCHS=$EPOCHS OPTIMIZER=$OPTIMIZER bash recipes/wikitext2/compare.sh $*" \
  --optimizer "$OPTIMIZER" \
  --adaptive "$CKPT_ROOT/compare-adaptive$SUFFIX" \
  --full "$CKPT_ROOT/compare-full$SUFFIX"
