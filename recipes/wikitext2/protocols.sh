#!/usr/bin/env bash
# One checkpoint under three evaluation protocols, valid and test:
#   blocks:  fairseq's, 512-token blocks scored independently;
#   classic: awd-lstm-lm's, contiguous streams (10 valid, 1 test) read 70
#            tokens at a time with the hidden state carried (--stateful-bptt);
#   cache:   classic plus Grave et al. 2017's continuous cache, its size,
#            theta and lambda tuned on valid first (benchmarks/tune_neural_cache.py).
#
# Hardware: any; for the 4 x 800 model on 2 CPU cores, ~1.3 minutes per split
#           under blocks and classic, ~3.3 under cache (fairseq-eval-lm scores
#           the full vocabulary), and ~6 minutes of cache tuning (one pass over
#           valid, then 4 sizes x 6 thetas x 6 lambdas; measured with a test
#           run sharing the cores).
# Result:   benchmarks/results/wikitext2_protocols.json (or $NAME.json).
#           eval.sh skips evaluations already done for this checkpoint, and
#           the tuning is skipped when $SAVE_DIR/neural_cache.json is newer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAVE_DIR=${SAVE_DIR:?set SAVE_DIR to the training save dir (it must hold checkpoint_best.pt)}
NAME=${NAME:-wikitext2_protocols}
export SAVE_DIR

TUNED=$SAVE_DIR/neural_cache.json
if ! [ "$TUNED" -nt "$SAVE_DIR/checkpoint_best.pt" ]; then
  (cd "$ROOT" && "${VENV_BIN:-$ROOT/.venv/bin}/python" -m benchmarks.tune_neural_cache \
     --data "${DATA_BIN:-$ROOT/data-bin/wikitext-2}" --save-dir "$SAVE_DIR")
fi

for PROTOCOL in blocks classic cache; do
  PROTOCOL=$PROTOCOL SUBSET=valid bash "$ROOT/recipes/wikitext2/eval.sh"
  PROTOCOL=$PROTOCOL SUBSET=test bash "$ROOT/recipes/wikitext2/eval.sh"
done

cd "$ROOT"
"${VENV_BIN:-$ROOT/.venv/bin}/python" -m benchmarks.record_protocols \
  --name "$NAME" --save-dir "$SAVE_DIR" \
  --command "SAVE_DIR=$SAVE_DIR bash recipes/wikitext2/protocols.sh"
