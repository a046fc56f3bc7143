#!/usr/bin/env bash
# Train qrnn_lm on WikiText-2 with an adaptive (default) or full softmax.
#
# Hardware: 2 CPU cores: an epoch of the default qrnn_lm_wikitext2 (4 x 800)
#           takes ~8 minutes with --cpu-autocast-bf16 (~4.7k words/s) on a
#           CPU with bf16 instructions, ~4 minutes (~9k words/s) on another
#           (AMD family 26, wikitext2_main_bf16_timed.json), ~15-18 minutes in
#           fp32 (~1.95-2.36k words/s on an AVX2 CPU, where
#           --cpu-autocast-bf16 is refused;
#           wikitext2_main_fp32_avx2{,_3ep}.json); of the seed's
#           4 x 300 ~5 minutes in fp32 (~7.7k words/s); a CUDA GPU is used
#           with --fp16 when present.
# Result:   $SAVE_DIR/checkpoint_best.pt, tensorboard logs in $SAVE_DIR/tb,
#           fairseq's JSON log in $SAVE_DIR/train.log. Skipped when
#           $SAVE_DIR already holds a finished run with the same settings;
#           refused when it holds one with other settings.
#
# Knobs (environment): SOFTMAX=adaptive|full, OPTIMIZER=adam|seed (the seed's
# SGD with Nesterov momentum), LR (Adam's peak learning rate, default 0.002),
# NPROC (DDP processes, via torchrun), SCHEDULE=epochs|time (Adam's learning
# rate decays over EPOCHS passes over DATA_BIN's train split, or MAX_UPDATE
# updates; or, with time, over STOP_TIME_HOURS of training, however many
# updates fit: --lr-scheduler timed_polynomial_decay), ARCH, SAVE_DIR,
# DATA_BIN, STOP_TIME_HOURS (the wall-clock guard), QUICK=1 (a few minutes),
# and any extra fairseq-train flags as arguments.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
DATA_BIN=${DATA_BIN:-$ROOT/data-bin/wikitext-2}
ARCH=${ARCH:-qrnn_lm_wikitext2}
SOFTMAX=${SOFTMAX:-adaptive}
NPROC=${NPROC:-1}
QUICK=${QUICK:-0}
SAVE_DIR=${SAVE_DIR:-$ROOT/checkpoints/wikitext2-$ARCH-$SOFTMAX$([ "$QUICK" = 1 ] && echo -quick || true)}
# Seed experiment batching: 48 streams of 70-token blocks (3,360 tokens per update).
BATCH_SIZE=${BATCH_SIZE:-48}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-70}
EPOCHS=${EPOCHS:-6}
# Wall-clock guard so the 60-minute main job cannot overrun on a slow machine.
STOP_TIME_HOURS=${STOP_TIME_HOURS:-0.6}
SCHEDULE=${SCHEDULE:-epochs}
OPTIMIZER=${OPTIMIZER:-adam}
case "$SCHEDULE" in
  epochs) ;;
  time)
    [ "$OPTIMIZER" = adam ] || {
      echo "train: SCHEDULE=time decays Adam's learning rate; OPTIMIZER=$OPTIMIZER keeps a fixed one: set OPTIMIZER=adam or SCHEDULE=epochs" >&2
      exit 1
    }
    awk -v h="$STOP_TIME_HOURS" 'BEGIN { exit !(h > 0) }' || {
      echo "train: SCHEDULE=time decays the learning rate over STOP_TIME_HOURS, got '$STOP_TIME_HOURS': set it to the hours of training wanted" >&2
      exit 1
    } ;;
  *) echo "train: SCHEDULE must be 'epochs' or 'time', got '$SCHEDULE'" >&2; exit 1 ;;
esac

[ -s "$DATA_BIN/dict.txt" ] || {
  echo "train: $DATA_BIN has no dict.txt; run recipes/wikitext2/prepare.sh first or set DATA_BIN" >&2
  exit 1
}

case "$SOFTMAX" in
  adaptive) OUTPUT_FLAGS=(--adaptive-softmax-cutoff 0.0667,0.2) ;;  # the seed's [V/15, 3V/15]
  full)     OUTPUT_FLAGS=(--adaptive-softmax-cutoff "") ;;
  *) echo "train: SOFTMAX must be 'adaptive' or 'full', got '$SOFTMAX'" >&2; exit 1 ;;
esac

if [ "$QUICK" = 1 ]; then
  MAX_UPDATE=${MAX_UPDATE:-150}
  EXTRA_LIMITS=(--max-valid-steps 20)
elif [ "$SCHEDULE" = time ]; then
  MAX_UPDATE=${MAX_UPDATE:-0}  # no update limit: the STOP_TIME_HOURS guard ends training as the decay ends
  EXTRA_LIMITS=()
else
  if [ -z "${MAX_UPDATE:-}" ]; then
    # The schedule's length comes from DATA_BIN's own train split, so another
    # corpus or tokenization (spm.sh's subwords) gets EPOCHS real epochs.
    # fairseq-preprocess adds one end-of-line token per line: 2,088,628 tokens
    # for WikiText-2's words. The task's own reader names a missing or empty split.
    TRAIN_TOKENS=$(cd "$ROOT" && "$VENV_BIN/python" - "$DATA_BIN" <<'EOF'
import sys
from fairseq.data import Dictionary
from fairseq_adasoft.tasks.language_modeling_freqsorted import train_split
data = sys.argv[1]
try:
    train = train_split(data, Dictionary.load(f"{data}/dict.txt"))
    print(int(train.sizes.sum()))  # sizes views train's mmap: keep train alive while it is read
except ValueError as e:
    sys.exit(f"train: {e}; DATA_BIN={data} must be a fairseq-preprocess --destdir with a train split")
EOF
    )
    UPDATES_PER_EPOCH=$(( (TRAIN_TOKENS + BATCH_SIZE * TOKENS_PER_SAMPLE - 1) / (BATCH_SIZE * TOKENS_PER_SAMPLE) ))
    MAX_UPDATE=$((EPOCHS * UPDATES_PER_EPOCH / NPROC))
  fi
  EXTRA_LIMITS=()
fi

LR=${LR:-0.002}
if [ "$SCHEDULE" = time ]; then
  SCHEDULE_FLAGS=(--lr-scheduler timed_polynomial_decay)
else
  SCHEDULE_FLAGS=(--lr-scheduler polynomial_decay --total-num-update "$MAX_UPDATE")
fi
case "$OPTIMIZER" in
  adam) OPTIMIZER_FLAGS=(--optimizer adam --adam-betas "(0.9, 0.999)" --clip-norm 0.25
                         --lr "$LR" "${SCHEDULE_FLAGS[@]}" --warmup-updates 100
                         --end-learning-rate 0.0001) ;;
  seed) OPTIMIZER_FLAGS=(--optimizer nag --momentum 0.9 --clip-norm 0.25
                         --lr 1 --lr-scheduler fixed) ;;
  *) echo "train: OPTIMIZER must be 'adam' or 'seed', got '$OPTIMIZER'" >&2; exit 1 ;;
esac

# What makes two runs the same run: a finished one is skipped only when it matches.
SETTINGS="arch=$ARCH softmax=$SOFTMAX optimizer=$OPTIMIZER lr=$LR batch=$BATCH_SIZE"
SETTINGS+=" tokens=$TOKENS_PER_SAMPLE max_update=$MAX_UPDATE nproc=$NPROC data=$DATA_BIN extra=[$*]"
[ "$SCHEDULE" = epochs ] || SETTINGS+=" schedule=$SCHEDULE hours=$STOP_TIME_HOURS"
if [ -s "$SAVE_DIR/checkpoint_last.pt" ] && [ -s "$SAVE_DIR/.finished" ]; then
  FINISHED=$(sed -n 's/^settings: //p' "$SAVE_DIR/.finished")
  if [ -n "$FINISHED" ] && [ "$FINISHED" != "$SETTINGS" ]; then
    echo "train: $SAVE_DIR already holds a finished run with other settings:" >&2
    echo "  there: $FINISHED" >&2
    echo "  now:   $SETTINGS" >&2
    echo "train: set SAVE_DIR to a new directory, or move that run away; nothing was changed" >&2
    exit 1
  fi
  echo "train: $SAVE_DIR already holds a finished run ($(head -1 "$SAVE_DIR/.finished")); skipping"
  exit 0
fi

if "$VENV_BIN/python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  DEVICE_FLAGS=(--fp16)
  DIST_BACKEND=nccl
  echo "train: CUDA GPU found; training with --fp16"
else
  DEVICE_FLAGS=(--cpu)
  DIST_BACKEND=gloo
  echo "train: no CUDA GPU; training in fp32 on CPU (fairseq's --fp16 needs CUDA: its FP16Optimizer fails on CPU)"
  # glibc otherwise returns large activations to the OS after every step.
  export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
fi

if [ "$NPROC" -gt 1 ]; then
  LAUNCH=("$VENV_BIN/torchrun" --nproc_per_node "$NPROC" -m fairseq_adasoft.launch)
  DIST_FLAGS=(--distributed-backend "$DIST_BACKEND")
else
  LAUNCH=("$VENV_BIN/fairseq-train")
  DIST_FLAGS=()
fi

mkdir -p "$SAVE_DIR"
cd "$ROOT"
"${LAUNCH[@]}" "$DATA_BIN" \
  --user-dir "$ROOT/fairseq_adasoft" \
  --task language_modeling_freqsorted --tokens-per-sample "$TOKENS_PER_SAMPLE" \
  --arch "$ARCH" "${OUTPUT_FLAGS[@]}" \
  --criterion adaptive_softmax \
  "${OPTIMIZER_FLAGS[@]}" \
  --batch-size "$BATCH_SIZE" --max-update "$MAX_UPDATE" --stop-time-hours "$STOP_TIME_HOURS" \
  "${EXTRA_LIMITS[@]}" \
  "${DEVICE_FLAGS[@]}" "${DIST_FLAGS[@]}" \
  --seed 1 \
  --save-dir "$SAVE_DIR" --no-epoch-checkpoints \
  --tensorboard-logdir "$SAVE_DIR/tb" \
  --log-format json --log-interval 50 --log-file "$SAVE_DIR/train.log" \
  "$@"
printf 'max_update=%s date=%s\nsettings: %s\n' "$MAX_UPDATE" "$(date -Is)" "$SETTINGS" > "$SAVE_DIR/.finished"
