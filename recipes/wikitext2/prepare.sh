#!/usr/bin/env bash
# Find, verify and binarize WikiText-2 (Merity et al. 2016) for fairseq; with
# WIKITEXT=103, WikiText-103 (recipes/wikitext103/prepare.sh sets it).
#
# Hardware: any CPU; about 1 minute on 2 cores for WikiText-2, tens of minutes
#           for WikiText-103 (fairseq-preprocess --workers WORKERS).
# Result:   $DATA_BIN/{dict.txt,train,valid,test}.{bin,idx} with a
#           frequency-sorted dictionary (33,280 entries for WikiText-2, 267,744
#           for WikiText-103). Skipped when already done.
#
# Where the raw wiki.{train,valid,test}.tokens come from, first found wins:
#   1. $WIKITEXT2_DIR (WIKITEXT103_DIR)   (an error if set but incomplete)
#   2. ../shared/data/wikitext-2 (-103) beside the checkout
#   3. the official wikitext-2-v1.zip (-103-), downloaded from WIKITEXT_URL into $DOWNLOAD_DIR
#
# Knobs: WIKITEXT=2|103, WIKITEXT2_DIR / WIKITEXT103_DIR, DOWNLOAD_DIR,
# WIKITEXT_URL (any URL curl reads, file:// included), EXPECTED_TOKENS (for
# another corpus in the same layout: train=N,valid=N,test=N; default the
# published counts), WORKERS, common.sh's (DATA_BIN, VENV_BIN, ...).
set -euo pipefail
WIKITEXT=${WIKITEXT:-2}
CORPUS=wikitext-$WIKITEXT
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Published sizes (Merity et al. 2016; one <eos> per line counted as a token).
case "$WIKITEXT" in
  2)   PUBLISHED=train=2088628,valid=217646,test=245569 ;;
  103) PUBLISHED=train=103227021,valid=217646,test=245569 ;;
  *)   die "WIKITEXT must be 2 or 103, got '$WIKITEXT'" ;;
esac
EXPECTED_TOKENS=${EXPECTED_TOKENS:-$PUBLISHED}
RAW_DIR_VAR=WIKITEXT${WIKITEXT}_DIR
DOWNLOAD_DIR=${DOWNLOAD_DIR:-$ROOT/work-data}
WIKITEXT_URL=${WIKITEXT_URL:-https://s3.amazonaws.com/research.metamind.io/wikitext/$CORPUS-v1.zip}
WORKERS=${WORKERS:-$(nproc)}
SPLITS="train valid test"

has_splits() { for s in $SPLITS; do [ -s "$1/wiki.$s.tokens" ] || return 1; done; }

if [ -s "$DATA_BIN/.prepared" ]; then
  echo "prepare: $DATA_BIN is already prepared ($(cat "$DATA_BIN/.prepared")); skipping"
  exit 0
fi

if [ -n "${!RAW_DIR_VAR:-}" ]; then
  has_splits "${!RAW_DIR_VAR}" || die "$RAW_DIR_VAR=${!RAW_DIR_VAR} lacks wiki.{train,valid,test}.tokens;" \
    "point it at the unzipped $CORPUS folder, or unset it to use the shared copy or download"
  RAW=${!RAW_DIR_VAR}
elif has_splits "$ROOT/../shared/data/$CORPUS"; then
  RAW=$(cd "$ROOT/../shared/data/$CORPUS" && pwd)
else
  RAW=$DOWNLOAD_DIR/$CORPUS
  if ! has_splits "$RAW"; then
    ARCHIVE=$DOWNLOAD_DIR/$CORPUS-v1.zip
    if ! [ -s "$ARCHIVE" ]; then
      echo "prepare: downloading $WIKITEXT_URL"
      mkdir -p "$DOWNLOAD_DIR"
      curl -fL --retry 3 -o "$ARCHIVE.part" "$WIKITEXT_URL" \
        || die "could not download $WIKITEXT_URL; download it by hand into $DOWNLOAD_DIR, or set $RAW_DIR_VAR"
      mv "$ARCHIVE.part" "$ARCHIVE"
    fi
    "$PY" -m zipfile -e "$ARCHIVE" "$DOWNLOAD_DIR"
    has_splits "$RAW" || die "$ARCHIVE holds no $CORPUS/wiki.{train,valid,test}.tokens; remove it and download" \
      "$CORPUS-v1.zip again (the tokenized, not the -raw-v1, version)"
  fi
fi
echo "prepare: raw $CORPUS from $RAW"

"$PY" - "$RAW" "$CORPUS" "$EXPECTED_TOKENS" "$PUBLISHED" <<'EOF'
import sys
raw, corpus, expected, published = sys.argv[1:]
expected = {k: int(v) for k, v in (kv.split("=") for kv in expected.split(","))}
for split, want in expected.items():
    path = f"{raw}/wiki.{split}.tokens"
    with open(path, encoding="utf-8") as f:
        got = sum(len(line.split()) + 1 for line in f)
    if got != want:
        hint = (f"re-download {corpus}-v1.zip (the tokenized, not the -raw-v1, version)"
                if sys.argv[3] == published else "check EXPECTED_TOKENS")
        sys.exit(f"prepare: {path} has {got:,} tokens, {corpus.replace('wikitext', 'WikiText')} has {want:,}; {hint}")
    print(f"prepare: {split}: {got:,} tokens, as {'published' if sys.argv[3] == published else 'expected'}")
EOF

# Binarize into a scratch folder and move it into place only when complete,
# so an interrupted run never leaves a half-written data directory behind.
TMP_BIN="$DATA_BIN.tmp.$$"
trap 'rm -rf "$TMP_BIN"' EXIT
"$VENV_BIN/fairseq-preprocess" --only-source \
  --trainpref "$RAW/wiki.train.tokens" \
  --validpref "$RAW/wiki.valid.tokens" \
  --testpref "$RAW/wiki.test.tokens" \
  --destdir "$TMP_BIN" \
  --workers "$WORKERS"
echo "raw=$RAW dict_size=$(wc -l < "$TMP_BIN/dict.txt")" > "$TMP_BIN/.prepared"
mkdir -p "$(dirname "$DATA_BIN")"
rm -rf "$DATA_BIN"
mv "$TMP_BIN" "$DATA_BIN"
echo "prepare: wrote $DATA_BIN"
