#!/usr/bin/env bash
# Train qrnn_lm_wikitext103 (Merity, Keskar & Socher 2018: 4 x 2500 QRNN,
# embedding 400) with adaptive input tied to the adaptive softmax (Baevski &
# Auli 2019; docs/large-vocabularies.md), stateful BPTT over 140-token windows,
# Adam lr 1e-3 decaying over STOP_TIME_HOURS of training (default 12):
# awd-lstm-lm's WikiText-103 setting, run by recipes/wikitext2/train.sh.
#
# Hardware: CUDA GPUs (fp16, one DDP process per GPU through torchrun; several
#           machines with NNODES, NODE_RANK, MASTER_ADDR: docs/distributed.md).
#           On a CPU it runs, but an epoch takes days.
# Expected: published (Merity et al. 2018, plain embedding, not measured here):
#           33.0 test perplexity after 12 hours on one GPU.
# Result:   $SAVE_DIR (default $CKPT_ROOT/wikitext103[_quick]) as train.sh's.
# Knobs:    BATCH_SIZE (streams per process), TOKENS_PER_SAMPLE, LR,
#           STOP_TIME_HOURS (defaults: presets.WIKITEXT103_JOB's, in
#           fairseq_adasoft/presets.py), NPROC (default: every local GPU),
#           NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, QUICK=1 (150 updates,
#           the schedule over them), recipes/wikitext2/train.sh's; extra
#           arguments go on to fairseq-train.
set -euo pipefail
CORPUS=wikitext-103
source "$(dirname "${BASH_SOURCE[0]}")/../wikitext2/common.sh"
load_presets
probe_cuda

export DATA_BIN ARCH=${ARCH:-$PRESET_WIKITEXT103_ARCH}
export BATCH_SIZE=${BATCH_SIZE:-$PRESET_WIKITEXT103_BATCH_SIZE} LR=${LR:-$PRESET_WIKITEXT103_LR}
export TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-$PRESET_WIKITEXT103_TOKENS_PER_SAMPLE}
export STOP_TIME_HOURS=${STOP_TIME_HOURS:-$PRESET_WIKITEXT103_STOP_TIME_HOURS}
export SCHEDULE=${SCHEDULE:-$([ "$QUICK" = 1 ] && echo epochs || echo time)}
export NPROC=${NPROC:-$((CUDA_DEVICES > 0 ? CUDA_DEVICES : 1))}
export SAVE_DIR=${SAVE_DIR:-$CKPT_ROOT/wikitext103${QUICK_SUFFIX//-/_}}
# Tying needs the input bands as wide as the tails: factor = div value. The tails keep their
# own projections (docs/large-vocabularies.md).
ADAPTIVE_INPUT=(--adaptive-softmax-div-value 4 --adaptive-input --adaptive-input-factor 4 --tie-adaptive-weights)
exec bash "$HERE/train.sh" --stateful-bptt "${ADAPTIVE_INPUT[@]}" "$@"
