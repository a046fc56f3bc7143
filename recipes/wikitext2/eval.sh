#!/usr/bin/env bash
# Score a trained model on a WikiText-2 split (default: test) with fairseq-eval-lm.
#
# Hardware: any; minutes on 2 CPU cores.
# Result:   prints "test perplexity (blocks protocol): X" and writes
#           $SAVE_DIR/eval_test.log (eval_test_classic.log, eval_test_cache.log
#           for the other protocols); skipped when that log is newer than the
#           checkpoint and holds a perplexity.
# Protocol: PROTOCOL=blocks (default), fairseq's: fixed-length blocks scored
#           independently, no state carried across blocks.
#           PROTOCOL=classic, awd-lstm-lm's: the split as contiguous streams
#           (several for valid, one for test) read a few tokens at a time, the
#           hidden state carried across batches (--stateful-bptt); every token
#           sees its whole history, so perplexity comes out lower.
#           PROTOCOL=cache: classic, plus the continuous cache of Grave et al.
#           2017 (--neural-cache-size/theta/lambda) with the setting tuned on
#           valid in $SAVE_DIR/neural_cache.json (python -m
#           fairseq_adasoft.tune_cache writes it; protocols.sh runs it).
#           The lengths and stream counts are presets.EVAL_PROTOCOLS';
#           EVAL_TOKENS overrides the block length (blocks) or the tokens per
#           step (classic, cache). train.sh's TOKENS_PER_SAMPLE, which run.sh
#           and compare.sh pass on for training, does not change them.
# Knobs:    SAVE_DIR or CHECKPOINT, SUBSET, PROTOCOL, EVAL_TOKENS, OUT_LOG,
#           common.sh's (DATA_BIN, VENV_BIN, ...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CHECKPOINT=${CHECKPOINT:-${SAVE_DIR:?set SAVE_DIR (the training save dir) or CHECKPOINT}/checkpoint_best.pt}
SUBSET=${SUBSET:-test}
PROTOCOL=${PROTOCOL:-blocks}
load_presets
CLASSIC_FLAGS=(--stateful-bptt --tokens-per-sample "${EVAL_TOKENS:-$PRESET_CLASSIC_TOKENS}" --batch-size
               "$([ "$SUBSET" = test ] && echo "$PRESET_CLASSIC_TEST_STREAMS" || echo "$PRESET_CLASSIC_VALID_STREAMS")")
TUNED=""
case "$PROTOCOL" in
  blocks)
    PROTOCOL_FLAGS=(--tokens-per-sample "${EVAL_TOKENS:-$PRESET_BLOCK_TOKENS}" --batch-size "$PRESET_BLOCK_BATCH_SIZE")
    SUFFIX="" ;;
  classic)
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}")
    SUFFIX=_classic ;;
  cache)
    TUNED=$(dirname "$CHECKPOINT")/neural_cache.json
    [ -s "$TUNED" ] || die "PROTOCOL=cache needs $TUNED: run python -m fairseq_adasoft.tune_cache first"
    SETTING=$("$PY" -c \
      "import json, sys; c = json.load(open(sys.argv[1]))['best']; print(c['size'], c['theta'], c['lambda'])" "$TUNED")
    read -r SIZE THETA LAMBDA <<< "$SETTING"
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}"
                    --neural-cache-size "$SIZE" --neural-cache-theta "$THETA" --neural-cache-lambda "$LAMBDA")
    SUFFIX=_cache ;;
  *) die "PROTOCOL must be blocks, classic or cache, got '$PROTOCOL'" ;;
esac
OUT_LOG=${OUT_LOG:-$(dirname "$CHECKPOINT")/eval_$SUBSET$SUFFIX.log}

[ -s "$CHECKPOINT" ] || die "checkpoint $CHECKPOINT not found; run recipes/wikitext2/train.sh first"
read_ppl() { sed -n 's/.*Perplexity: \([0-9.]*\).*/\1/p' "$OUT_LOG" | tail -1; }
if [ "$OUT_LOG" -nt "$CHECKPOINT" ] && { [ -z "$TUNED" ] || [ "$OUT_LOG" -nt "$TUNED" ]; } && [ -n "$(read_ppl)" ]; then
  echo "eval: $OUT_LOG already scores this checkpoint; skipping"
  echo "$SUBSET perplexity ($PROTOCOL protocol): $(read_ppl)"
  exit 0
fi
DEVICE_FLAGS=()
has_cuda || DEVICE_FLAGS=(--cpu)

cd "$ROOT"
"$VENV_BIN/fairseq-eval-lm" "$DATA_BIN" \
  --user-dir "$PLUGIN_DIR" --task language_modeling_freqsorted \
  --path "$CHECKPOINT" --gen-subset "$SUBSET" \
  "${PROTOCOL_FLAGS[@]}" \
  "${DEVICE_FLAGS[@]}" 2>&1 | tee "$OUT_LOG"
PPL=$(read_ppl)
[ -n "$PPL" ] || die "fairseq-eval-lm printed no perplexity; see $OUT_LOG"
echo "$SUBSET perplexity ($PROTOCOL protocol): $PPL"
