#!/usr/bin/env bash
# Score a trained model on a WikiText-2 split (default: test) with fairseq-eval-lm.
#
# Hardware: any; minutes on 2 CPU cores.
# Result:   prints "test perplexity (blocks protocol): X" and writes
#           $SAVE_DIR/eval_test.log (eval_test_<protocol>.log for the other
#           protocols); skipped when that log is newer than the
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
#           fairseq_adasoft.tune cache writes it; protocols.sh runs it). Its
#           log also holds the same pass without the cache ("without the
#           cache: Loss (base 2) ..."): classic's figure, or dynamic's for
#           dynamic_cache.
#           PROTOCOL=dynamic: classic with Krause et al. 2018's dynamic
#           evaluation (--dynamic-eval) at the learning rate and decay tuned on
#           valid in $SAVE_DIR/dynamic_eval.json (python -m
#           fairseq_adasoft.tune dynamic-eval), with the gradient statistics
#           the tuner kept; it reads presets.DYNAMIC_EVAL's segments instead
#           of the classic step. PROTOCOL=dynamic_cache: both,
#           each with its own tuned setting.
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
TUNED=()  # the tuned settings a protocol reads: its log is stale when one is newer
cache_flags() {
  local tuned=$(dirname "$CHECKPOINT")/neural_cache.json
  [ -s "$tuned" ] || die "PROTOCOL=$PROTOCOL needs $tuned: run python -m fairseq_adasoft.tune cache first"
  TUNED+=("$tuned")
  read -r SIZE THETA LAMBDA <<< "$("$PY" -c \
    "import json, sys; c = json.load(open(sys.argv[1]))['best']; print(c['size'], c['theta'], c['lambda'])" "$tuned")"
  PROTOCOL_FLAGS+=(--neural-cache-size "$SIZE" --neural-cache-theta "$THETA" --neural-cache-lambda "$LAMBDA")
}
dynamic_flags() {
  local tuned=$(dirname "$CHECKPOINT")/dynamic_eval.json
  [ -s "$tuned" ] || die "PROTOCOL=$PROTOCOL needs $tuned: run python -m fairseq_adasoft.tune dynamic-eval first"
  TUNED+=("$tuned")
  read -r LR DECAY STATS STATS_TOKENS <<< "$("$PY" -c \
    "import json, sys; t = json.load(open(sys.argv[1])); c = t['best']
print(c['lr'], c['decay'], t['statistics_file'], t.get('statistics_tokens') or '')" "$tuned")"
  PROTOCOL_FLAGS+=(--dynamic-eval --dynamic-eval-lr "$LR" --dynamic-eval-decay "$DECAY" --dynamic-eval-stats-file "$STATS")
  # The statistics the tuner gathered, read from its file: the same tokens of the training split.
  [ -z "$STATS_TOKENS" ] || PROTOCOL_FLAGS+=(--dynamic-eval-stats-tokens "$STATS_TOKENS")
}
case "$PROTOCOL" in
  blocks)
    PROTOCOL_FLAGS=(--tokens-per-sample "${EVAL_TOKENS:-$PRESET_BLOCK_TOKENS}" --batch-size "$PRESET_BLOCK_BATCH_SIZE")
    SUFFIX="" ;;
  classic)
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}")
    SUFFIX=_classic ;;
  cache)
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}")
    cache_flags
    SUFFIX=_cache ;;
  dynamic)
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}")
    dynamic_flags
    SUFFIX=_dynamic ;;
  dynamic_cache)
    PROTOCOL_FLAGS=("${CLASSIC_FLAGS[@]}")
    dynamic_flags
    cache_flags
    SUFFIX=_dynamic_cache ;;
  *) die "PROTOCOL must be blocks, classic, cache, dynamic or dynamic_cache, got '$PROTOCOL'" ;;
esac
OUT_LOG=${OUT_LOG:-$(dirname "$CHECKPOINT")/eval_$SUBSET$SUFFIX.log}

[ -s "$CHECKPOINT" ] || die "checkpoint $CHECKPOINT not found; run recipes/wikitext2/train.sh first"
read_ppl() { sed -n 's/.*Perplexity: \([0-9.]*\).*/\1/p' "$OUT_LOG" | tail -1; }
fresh() {  # whether OUT_LOG is newer than the checkpoint and every tuned setting it used
  local input
  for input in "$CHECKPOINT" ${TUNED[@]+"${TUNED[@]}"}; do [ "$OUT_LOG" -nt "$input" ] || return 1; done
}
if fresh && [ -n "$(read_ppl)" ]; then
  echo "eval: $OUT_LOG already scores this checkpoint; skipping"
  echo "$SUBSET perplexity ($PROTOCOL protocol): $(read_ppl)"
  exit 0
fi
DEVICE_FLAGS=()
has_cuda || { DEVICE_FLAGS=(--cpu); cpu_malloc_settings; }

cd "$ROOT"
"$VENV_BIN/fairseq-eval-lm" "$DATA_BIN" \
  --user-dir "$PLUGIN_DIR" --task language_modeling_freqsorted \
  --path "$CHECKPOINT" --gen-subset "$SUBSET" \
  "${PROTOCOL_FLAGS[@]}" \
  "${DEVICE_FLAGS[@]}" 2>&1 | tee "$OUT_LOG"
PPL=$(read_ppl)
[ -n "$PPL" ] || die "fairseq-eval-lm printed no perplexity; see $OUT_LOG"
echo "$SUBSET perplexity ($PROTOCOL protocol): $PPL"
