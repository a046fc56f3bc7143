#!/usr/bin/env bash
# One checkpoint under both evaluation protocols, valid and test:
#   blocks:  fairseq's, 512-token blocks scored independently;
#   classic: awd-lstm-lm's, contiguous streams (10 valid, 1 test) read 70
#            tokens at a time with the hidden state carried (--stateful-bptt).
#
# Hardware: any; ~2 minutes per split and protocol for the 4 x 300 model on
#           2 CPU cores (fairseq-eval-lm scores the full vocabulary).
# Result:   benchmarks/results/wikitext2_protocols.json (or $NAME.json).
#           eval.sh skips evaluations already done for this checkpoint.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAVE_DIR=${SAVE_DIR:?set SAVE_DIR to the training save dir (it must hold checkpoint_best.pt)}
NAME=${NAME:-wikitext2_protocols}
export SAVE_DIR

for PROTOCOL in blocks classic; do
  PROTOCOL=$PROTOCOL SUBSET=valid bash "$ROOT/recipes/wikitext2/eval.sh"
  PROTOCOL=$PROTOCOL SUBSET=test bash "$ROOT/recipes/wikitext2/eval.sh"
done

cd "$ROOT"
"${VENV_BIN:-$ROOT/.venv/bin}/python" -m benchmarks.record_protocols \
  --name "$NAME" --save-dir "$SAVE_DIR" \
  --command "SAVE_DIR=$SAVE_DIR bash recipes/wikitext2/protocols.sh"
