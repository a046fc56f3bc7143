#!/usr/bin/env bash
# WikiText-2 with a sentencepiece vocabulary, trained through the task's
# re-sorting path: sentencepiece numbers its pieces in its own order, not by
# training frequency, and language_modeling_freqsorted re-sorts them in memory.
#
# Hardware: 2 CPU cores; ~2 minutes for sentencepiece and preprocessing, then
#           presets.SPM_JOB's training: the main job's architecture alone (not its
#           train_flags), Adam over epochs (QUICK=1: a few minutes).
# Result:   $SPM_DIR/spm.model, $DATA_BIN (binarized with the spm vocabulary as
#           --srcdict), and a trained model in train.sh's SAVE_DIR. Each step is
#           skipped when its output exists.
# Knobs:    RAW_DIR (wiki.{train,valid,test}.tokens; default: the copy
#           prepare.sh found), SPM_VOCAB (default 16000), SPM_DIR, DATA_BIN
#           (default: data-bin/wikitext-2-spm$SPM_VOCAB), WORKERS, plus train.sh's
#           (LR, EPOCHS and STOP_TIME_HOURS default to presets.SPM_JOB's).
set -euo pipefail
SPM_BIN=${DATA_BIN:-}  # read before common.sh sets DATA_BIN's default, the word-level data
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPM_VOCAB=${SPM_VOCAB:-16000}
SPM_DIR=${SPM_DIR:-$ROOT/work-data/wikitext-2-spm$SPM_VOCAB}
DATA_BIN=${SPM_BIN:-$ROOT/data-bin/wikitext-2-spm$SPM_VOCAB}
WORD_BIN=$ROOT/data-bin/wikitext-2

if [ -z "${RAW_DIR:-}" ]; then  # let prepare.sh find and verify the raw files
  DATA_BIN=$WORD_BIN bash "$HERE/prepare.sh"
  RAW_DIR=$(sed -n 's/^raw=\([^ ]*\) .*/\1/p' "$WORD_BIN/.prepared")
fi
for split in train valid test; do
  [ -s "$RAW_DIR/wiki.$split.tokens" ] || die "RAW_DIR=$RAW_DIR lacks wiki.$split.tokens; point RAW_DIR at the raw WikiText-2 folder"
done
mkdir -p "$SPM_DIR"

if [ ! -s "$SPM_DIR/spm.model" ]; then
  echo "spm: training a $SPM_VOCAB-piece unigram model on $RAW_DIR/wiki.train.tokens"
  "$PY" - "$RAW_DIR/wiki.train.tokens" "$SPM_DIR/spm" "$SPM_VOCAB" <<'PY'
import sys
import sentencepiece as spm
# fairseq adds its own <s>, <pad>, </s>: sentencepiece keeps only <unk> (id 0).
spm.SentencePieceTrainer.train(input=sys.argv[1], model_prefix=sys.argv[2], vocab_size=int(sys.argv[3]),
                               model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1,
                               hard_vocab_limit=False, minloglevel=2)
PY
fi

if [ ! -s "$SPM_DIR/dict.txt" ]; then
  "$PY" - "$SPM_DIR" "$RAW_DIR" <<'PY'
import sys
import sentencepiece as spm
spm_dir, raw = sys.argv[1:]
sp = spm.SentencePieceProcessor(model_file=f"{spm_dir}/spm.model")
for split in ("train", "valid", "test"):
    with open(f"{raw}/wiki.{split}.tokens", encoding="utf-8") as src, \
         open(f"{spm_dir}/{split}.spm", "w", encoding="utf-8") as dst:
        for line in src:
            dst.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
# The vocabulary in sentencepiece's own order, as a fairseq dictionary (its
# counts are placeholders: the task counts the training split itself).
with open(f"{spm_dir}/dict.txt", "w", encoding="utf-8") as f:
    for i in range(sp.get_piece_size()):
        if not sp.is_unknown(i) and not sp.is_control(i):
            f.write(f"{sp.id_to_piece(i)} 1\n")
PY
fi

if [ ! -s "$DATA_BIN/.prepared" ]; then
  TMP_BIN="$DATA_BIN.tmp.$$"
  trap 'rm -rf "$TMP_BIN"' EXIT
  "$VENV_BIN/fairseq-preprocess" --only-source \
    --srcdict "$SPM_DIR/dict.txt" \
    --trainpref "$SPM_DIR/train.spm" --validpref "$SPM_DIR/valid.spm" --testpref "$SPM_DIR/test.spm" \
    --destdir "$TMP_BIN" --workers "${WORKERS:-2}"
  echo "raw=$RAW_DIR spm=$SPM_DIR/spm.model" > "$TMP_BIN/.prepared"
  rm -rf "$DATA_BIN"
  mv "$TMP_BIN" "$DATA_BIN"
fi

load_presets
export DATA_BIN MAIN_JOB=0 LR=${LR:-$PRESET_SPM_LR} STOP_TIME_HOURS=${STOP_TIME_HOURS:-$PRESET_SPM_STOP_TIME_HOURS}
export SCHEDULE=${SCHEDULE:-epochs} EPOCHS=${EPOCHS:-$PRESET_SPM_EPOCHS}
export SAVE_DIR=${SAVE_DIR:-$CKPT_ROOT/wikitext2-spm$SPM_VOCAB$QUICK_SUFFIX}
bash "$HERE/train.sh" "$@"
