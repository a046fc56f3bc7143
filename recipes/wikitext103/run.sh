#!/usr/bin/env bash
# WikiText-103 from a fresh clone: set up, prepare, train (train.sh: adaptive
# input and adaptive softmax, fp16 and DDP over every local GPU), evaluate
# under both protocols (eval.sh) and record the result.
#
# Hardware: CUDA GPUs; 12 hours of training by default (STOP_TIME_HOURS).
#           QUICK=1 (150 updates, then the whole evaluations) checks the
#           pipeline on the real data in minutes on a GPU.
# Expected: published (Merity et al. 2018, a plain embedding, one GPU, not
#           measured here): 33.0 test perplexity after 12 hours.
# Result:   $RESULTS_DIR/$NAME.json (default wikitext103[_quick]): both
#           protocols on valid and test, the phase times, the settings.
# Knobs:    NAME, train.sh's, eval.sh's; arguments go on to fairseq-train.
set -euo pipefail
CORPUS=wikitext-103
source "$(dirname "${BASH_SOURCE[0]}")/../wikitext2/common.sh"
HERE103=$ROOT/recipes/wikitext103

export QUICK NAME=${NAME:-wikitext103${QUICK_SUFFIX//-/_}}
export SAVE_DIR=${SAVE_DIR:-$CKPT_ROOT/$NAME}
phase setup bash "$ROOT/scripts/setup_env.sh"
probe_cuda
phase prepare bash "$HERE103/prepare.sh"
phase train bash "$HERE103/train.sh" "$@"
phase eval bash "$HERE103/eval.sh"

EXTRA_TEXT=$([ $# -eq 0 ] || printf ' %q' "$@")
cd "$ROOT"
"$PY" -m fairseq_adasoft.record run --results-dir "$RESULTS_DIR" --name "$NAME" --classic \
  --command "QUICK=$QUICK NAME=$NAME bash recipes/wikitext103/run.sh$EXTRA_TEXT" \
  --config "qrnn_lm_wikitext103, adaptive input tied to the adaptive softmax (factor 4, tied projections), stateful BPTT$EXTRA_TEXT (see recipes/wikitext103/train.sh)" \
  --save-dir "$SAVE_DIR" --phase-seconds "${PHASES[@]}" \
  --note "published (Merity et al. 2018, plain embedding, one GPU, not measured here): 33.0 test perplexity after 12 hours"
