#!/usr/bin/env bash
# Score a trained model on the WikiText-2 test split with fairseq-eval-lm.
#
# Hardware: any; about 1 minute for the default model on 2 CPU cores.
# Result:   prints "test perplexity: X" and writes $SAVE_DIR/eval_test.log.
# Protocol: fairseq's: 512-token blocks scored independently (no state
#           carried across blocks), so numbers are a little above the
#           classic RNN-LM protocol of awd-lstm-lm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
DATA_BIN=${DATA_BIN:-$ROOT/data-bin/wikitext-2}
CHECKPOINT=${CHECKPOINT:-${SAVE_DIR:?set SAVE_DIR (the training save dir) or CHECKPOINT}/checkpoint_best.pt}
SUBSET=${SUBSET:-test}
OUT_LOG=${OUT_LOG:-$(dirname "$CHECKPOINT")/eval_$SUBSET.log}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-512}

[ -s "$CHECKPOINT" ] || { echo "eval: checkpoint $CHECKPOINT not found; run recipes/wikitext2/train.sh first" >&2; exit 1; }
DEVICE_FLAGS=()
"$VENV_BIN/python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || DEVICE_FLAGS=(--cpu)

cd "$ROOT"
"$VENV_BIN/fairseq-eval-lm" "$DATA_BIN" \
  --user-dir "$ROOT/fairseq_adasoft" --task language_modeling_freqsorted \
  --path "$CHECKPOINT" --gen-subset "$SUBSET" \
  --tokens-per-sample "$TOKENS_PER_SAMPLE" --batch-size 8 \
  "${DEVICE_FLAGS[@]}" 2>&1 | tee "$OUT_LOG"
PPL=$(sed -n 's/.*Perplexity: \([0-9.]*\).*/\1/p' "$OUT_LOG" | tail -1)
[ -n "$PPL" ] || { echo "eval: fairseq-eval-lm printed no perplexity; see $OUT_LOG" >&2; exit 1; }
echo "$SUBSET perplexity: $PPL"
