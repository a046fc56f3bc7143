#!/usr/bin/env bash
# Score a WikiText-103 checkpoint on valid and test under fairseq's blocks and
# awd-lstm-lm's classic protocol (recipes/wikitext2/eval.sh; docs/stateful-bptt.md).
#
# Hardware: a GPU: minutes per split; on 2 CPU cores about an hour per split
#           for the 4 x 2500 model.
# Result:   $SAVE_DIR/eval_{valid,test}{,_classic}.log; each skipped when done.
# Knobs:    SAVE_DIR or CHECKPOINT, recipes/wikitext2/eval.sh's.
set -euo pipefail
CORPUS=wikitext-103
source "$(dirname "${BASH_SOURCE[0]}")/../wikitext2/common.sh"
probe_cuda

export DATA_BIN SAVE_DIR=${SAVE_DIR:-$CKPT_ROOT/wikitext103${QUICK_SUFFIX//-/_}}
for PROTOCOL in blocks classic; do
  for SUBSET in valid test; do
    PROTOCOL=$PROTOCOL SUBSET=$SUBSET bash "$HERE/eval.sh"
  done
done
