#!/usr/bin/env bash
# Find, verify and binarize WikiText-2 (Merity et al. 2016) for fairseq.
#
# Hardware: any CPU; about 1 minute on 2 cores.
# Result:   $DATA_BIN/{dict.txt,train,valid,test}.{bin,idx} with a 33,280-entry
#           frequency-sorted dictionary. Skipped when already done.
#
# Where the raw wiki.{train,valid,test}.tokens come from, first found wins:
#   1. $WIKITEXT2_DIR                     (an error if set but incomplete)
#   2. ../shared/data/wikitext-2 beside the checkout
#   3. the official wikitext-2-v1.zip, downloaded into $DOWNLOAD_DIR
#
# Knobs: WIKITEXT2_DIR, DOWNLOAD_DIR, WORKERS, common.sh's (DATA_BIN, VENV_BIN, ...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DOWNLOAD_DIR=${DOWNLOAD_DIR:-$ROOT/work-data}
WIKITEXT2_URL=https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip
WORKERS=${WORKERS:-2}
SPLITS="train valid test"

has_splits() { for s in $SPLITS; do [ -s "$1/wiki.$s.tokens" ] || return 1; done; }

if [ -s "$DATA_BIN/.prepared" ]; then
  echo "prepare: $DATA_BIN is already prepared ($(cat "$DATA_BIN/.prepared")); skipping"
  exit 0
fi

if [ -n "${WIKITEXT2_DIR:-}" ]; then
  has_splits "$WIKITEXT2_DIR" || die "WIKITEXT2_DIR=$WIKITEXT2_DIR lacks wiki.{train,valid,test}.tokens;" \
    "point it at the unzipped wikitext-2 folder, or unset it to use the shared copy or download"
  RAW=$WIKITEXT2_DIR
elif has_splits "$ROOT/../shared/data/wikitext-2"; then
  RAW=$(cd "$ROOT/../shared/data/wikitext-2" && pwd)
else
  RAW=$DOWNLOAD_DIR/wikitext-2
  if ! has_splits "$RAW"; then
    echo "prepare: downloading $WIKITEXT2_URL"
    mkdir -p "$DOWNLOAD_DIR"
    curl -fL --retry 3 -o "$DOWNLOAD_DIR/wikitext-2-v1.zip.part" "$WIKITEXT2_URL"
    mv "$DOWNLOAD_DIR/wikitext-2-v1.zip.part" "$DOWNLOAD_DIR/wikitext-2-v1.zip"
    "$PY" -m zipfile -e "$DOWNLOAD_DIR/wikitext-2-v1.zip" "$DOWNLOAD_DIR"
  fi
fi
echo "prepare: raw WikiText-2 from $RAW"

# Published sizes (Merity et al. 2016; one <eos> per line counted as a token).
"$PY" - "$RAW" <<'EOF'
import sys
expected = {"train": 2_088_628, "valid": 217_646, "test": 245_569}
for split, want in expected.items():
    path = f"{sys.argv[1]}/wiki.{split}.tokens"
    with open(path, encoding="utf-8") as f:
        got = sum(len(line.split()) + 1 for line in f)
    if got != want:
        sys.exit(f"prepare: {path} has {got:,} tokens, WikiText-2 has {want:,}; "
                 f"re-download wikitext-2-v1.zip (the raw, not the -raw-v1, version)")
    print(f"prepare: {split}: {got:,} tokens, as published")
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
