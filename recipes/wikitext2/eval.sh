#!/usr/bin/env bash
# Score a trained model on the WikiText-2 test split with fairseq-eval-lm.
#
# Hardware: any; about 1 minute for the default model on 2 CPU cores.
# Result:   prints "test perplexity: X" and writes $SAVE_DIR/eval_test.log
#           (eval_test_classic.log for PROTOCOL=classic); skipped when that
#           log is newer than the checkpoint and holds a perplexity.
# Protocol: PROTOCOL=blocks (default), fairseq's: 512-token blocks scored
#           independently, no state carried across blocks.
#           PROTOCOL=classic, awd-lstm-lm's: the split as contiguous streams
#           (10 for valid, 1 for test) read 70 tokens at a time, the hidden
#           state carried across batches (--stateful-bptt); every token sees
#           its whole history, so perplexity comes out lower.
#           PROTOCOL=cache: classic, plus the continuous cache of Grave et al.
#           2017 (--neural-cache-size/theta/lambda) with the setting tuned on
#           valid in $SAVE_DIR/neural_cache.json (recipes/wikitext2/protocols.sh
#           writes it; benchmarks/tune_neural_cache.py).
#           EVAL_TOKENS overrides the block length (blocks: 512) or the tokens
#           per step (classic, cache: 70). train.sh's TOKENS_PER_SAMPLE, which
#           run.sh and compare.sh pass on for training, does not change them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
DATA_BIN=${DATA_BIN:-$ROOT/data-bin/wikitext-2}
CHECKPOINT=${CHECKPOINT:-${SAVE_DIR:?set SAVE_DIR (the training save dir) or CHECKPOINT}/checkpoint_best.pt}
SUBSET=${SUBSET:-test}
PROTOCOL=${PROTOCOL:-blocks}
# awd-lstm-lm: bptt 70, eval_batch_size 10, test_batch_size 1.
CLASSIC_FLAGS=(--stateful-bptt --tokens-per-sample "${EVAL_TOKENS:-70}"
               --batch-size "$([ "$SUBSET" = test ] && echo 1 || echo 10)")
TUNED=""
case "$PROTOCOL" in
  blocks)
    PROTOCOL_FLAGS=(--tokens-per-sample "${EVAL_TOKENS:-512}" --batch-size 8)
    SUFFIX="" ;;
  classic)
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}")
    SUFFIX=_classic ;;
  cache)
    TUNED=$(dirname "$CHECKPOINT")/neural_cache.json
    [ -s "$TUNED" ] || { echo "eval: PROTOCOL=cache needs $TUNED: run python -m benchmarks.tune_neural_cache first" >&2; exit 1; }
    SETTING=$("$VENV_BIN/python" -c \
      "import json, sys; c = json.load(open(sys.argv[1]))['best']; print(c['size'], c['theta'], c['lambda'])" "$TUNED")
    read -r SIZE THETA LAMBDA <<< "$SETTING"
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}"
                    --neural-cache-size "$SIZE" --neural-cache-theta "$THETA" --neural-cache-lambda "$LAMBDA")
    SUFFIX=_cache ;;
  *) echo "eval: PROTOCOL must be blocks, classic or cache, got '$PROTOCOL'" >&2; exit 1 ;;
esac
OUT_LOG=${OUT_LOG:-$(dirname "$CHECKPOINT")/eval_$SUBSET$SUFFIX.log}

[ -s "$CHECKPOINT" ] || { echo "eval: checkpoint $CHECKPOINT not found; run recipes/wikitext2/train.sh first" >&2; exit 1; }
read_ppl() { sed -n 's/.*Perplexity: \([0-9.]*\).*/\1/p' "$OUT_LOG" | tail -1; }
if [ "$OUT_LOG" -nt "$CHECKPOINT" ] && { [ -z "$TUNED" ] || [ "$OUT_LOG" -nt "$TUNED" ]; } && [ -n "$(read_ppl)" ]; then
  echo "eval: $OUT_LOG already scores this checkpoint; skipping"
  echo "$SUBSET perplexity ($PROTOCOL protocol): $(read_ppl)"
  exit 0
fi
DEVICE_FLAGS=()
"$VENV_BIN/python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || DEVICE_FLAGS=(--cpu)

cd "$ROOT"
"$VENV_BIN/fairseq-eval-lm" "$DATA_BIN" \
  --user-dir "$ROOT/fairseq_adasoft" --task language_modeling_freqsorted \
  --path "$CHECKPOINT" --gen-subset "$SUBSET" \
  "${PROTOCOL_FLAGS[@]}" \
  "${DEVICE_FLAGS[@]}" 2>&1 | tee "$OUT_LOG"
PPL=$(read_ppl)
[ -n "$PPL" ] || { echo "eval: fairseq-eval-lm printed no perplexity; see $OUT_LOG" >&2; exit 1; }
echo "$SUBSET perplexity ($PROTOCOL protocol): $PPL"
