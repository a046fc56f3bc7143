#!/usr/bin/env bash
# The main job, from a fresh clone: set up the environment, prepare WikiText-2,
# train qrnn_lm with an adaptive softmax, evaluate it, record the result.
#
# Hardware: 2 CPU cores (no GPU needed). Expected: ~36 minutes in all (1,957 s
#           measured, plus ~3 minutes building fairseq on a fresh machine) and
#           test perplexity ~159 (benchmarks/results/wikitext2_main.json).
#           QUICK=1: 150 updates, a few minutes, perplexity in the hundreds.
# Result:   prints the validation and test perplexity; writes
#           benchmarks/results/wikitext2_main[_quick].json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/recipes/wikitext2
QUICK=${QUICK:-0}
export QUICK
NAME=wikitext2_main$([ "$QUICK" = 1 ] && echo _quick || true)
export SAVE_DIR=${SAVE_DIR:-$ROOT/checkpoints/$NAME}

declare -a PHASES=()
phase() {  # phase NAME COMMAND...: run it and keep its wall time
  local name=$1 start=$SECONDS
  shift
  "$@"
  PHASES+=("$name=$((SECONDS - start))")
}

phase setup bash "$ROOT/scripts/setup_env.sh"
phase prepare bash "$HERE/prepare.sh"
phase train bash "$HERE/train.sh"
phase eval_valid env SUBSET=valid bash "$HERE/eval.sh"
phase eval_test env SUBSET=test bash "$HERE/eval.sh"

cd "$ROOT"
"$ROOT/.venv/bin/python" -m benchmarks.record_wikitext2_run \
  --name "$NAME" \
  --command "QUICK=$QUICK bash recipes/wikitext2/run.sh" \
  --config "qrnn_lm_wikitext2, adaptive softmax (see recipes/wikitext2/train.sh)" \
  --train-log "$SAVE_DIR/train.log" \
  --valid-log "$SAVE_DIR/eval_valid.log" \
  --test-log "$SAVE_DIR/eval_test.log" \
  --phase-seconds "${PHASES[@]}"
