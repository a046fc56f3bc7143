#!/usr/bin/env bash
# Train qrnn_lm on WikiText-2. Run bare, it trains the main job's model with the
# main job's settings (fairseq_adasoft/presets.py MAIN_JOB, which run.sh also
# records): qrnn_lm_wikitext2 with its train_flags (stateful BPTT, the adaptive
# softmax tied to the embedding), bf16 matmuls on a CPU that multiplies bf16 in
# hardware (elsewhere fp32 at its narrower fp32_hidden_size), Adam at its lr
# decaying over its stop_time_hours of training (SCHEDULE=time), its batch shape.
#
# Hardware: any CPU, about an hour on 2 cores (each recorded run's words/s is
#           in its results file, e.g. benchmarks/results/wikitext2_main_bf16.json);
#           a CUDA GPU is used with --fp16 when present.
# Result:   $SAVE_DIR/checkpoint_best.pt, tensorboard logs in $SAVE_DIR/tb,
#           fairseq's JSON log in $SAVE_DIR/train.log. Skipped when
#           $SAVE_DIR already holds a finished run with the same settings;
#           refused when it holds one with other settings.
#
# Knobs (environment), each defaulting to the main job's: ARCH, MAIN_JOB=1|0
# (1, the default for the main job's ARCH: add its train_flags and precision;
# 0, another ARCH's default: the architecture's own flags only), SOFTMAX=adaptive|full (adaptive: the architecture's cutoffs;
# for ARCH=qrnn_lm the seed's [V/15, 3V/15]), OPTIMIZER=adam|seed (the seed's
# SGD with Nesterov momentum), LR (Adam's peak learning rate), BATCH_SIZE,
# TOKENS_PER_SAMPLE, SCHEDULE=epochs|time (Adam's learning rate decays over
# EPOCHS passes over DATA_BIN's train split, or MAX_UPDATE updates; or, with
# time, over STOP_TIME_HOURS of training, however many updates fit:
# --lr-scheduler timed_polynomial_decay; EPOCHS, MAX_UPDATE or QUICK=1 make it
# epochs), STOP_TIME_HOURS (the wall-clock guard), NPROC (DDP processes per
# machine, via torchrun), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (several
# machines: run it on each, NODE_RANK 0 on MASTER_ADDR; docs/distributed.md),
# SAVE_DIR, QUICK=1 (150 updates, a few minutes); common.sh's (DATA_BIN,
# VENV_BIN, ...); extra arguments go on to fairseq-train, after the main job's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_presets

ARCH=${ARCH:-$PRESET_ARCH}
SOFTMAX=${SOFTMAX:-adaptive}
NPROC=${NPROC:-1}
NNODES=${NNODES:-1}
SAVE_DIR=${SAVE_DIR:-$CKPT_ROOT/wikitext2-$ARCH-$SOFTMAX$QUICK_SUFFIX}
# Wall-clock guard, so that a run on a slow machine still ends in bounded time.
STOP_TIME_HOURS=${STOP_TIME_HOURS:-$PRESET_STOP_TIME_HOURS}
if [ -z "${SCHEDULE:-}" ]; then
  SCHEDULE=time
  [ "$QUICK" != 1 ] && [ -z "${EPOCHS:-}${MAX_UPDATE:-}" ] || SCHEDULE=epochs
fi
OPTIMIZER=${OPTIMIZER:-adam}
case "$SCHEDULE" in
  epochs)
    [ "$QUICK" = 1 ] || [ -n "${EPOCHS:-}${MAX_UPDATE:-}" ] \
      || die "SCHEDULE=epochs decays the learning rate over EPOCHS passes or MAX_UPDATE updates: set one" ;;
  time)
    [ "$OPTIMIZER" = adam ] || die "SCHEDULE=time decays Adam's learning rate; OPTIMIZER=$OPTIMIZER keeps a fixed one:" \
                                   "set OPTIMIZER=adam or SCHEDULE=epochs"
    awk -v h="$STOP_TIME_HOURS" 'BEGIN { exit !(h > 0) }' \
      || die "SCHEDULE=time decays the learning rate over STOP_TIME_HOURS, got '$STOP_TIME_HOURS':" \
             "set it to the hours of training wanted" ;;
  *) die "SCHEDULE must be 'epochs' or 'time', got '$SCHEDULE'" ;;
esac

[ -s "$DATA_BIN/dict.txt" ] || die "$DATA_BIN has no dict.txt; run the recipe's prepare.sh first or set DATA_BIN"

BATCH_SIZE=${BATCH_SIZE:-$PRESET_BATCH_SIZE}  # streams per update
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-$PRESET_TOKENS_PER_SAMPLE}  # tokens per stream per update
case "$SOFTMAX" in
  # The named architectures set their own cutoffs; the plain qrnn_lm has none and gets the seed's.
  adaptive) OUTPUT_FLAGS=(); [ "$ARCH" != qrnn_lm ] || OUTPUT_FLAGS=(--adaptive-softmax-cutoff "$PRESET_SEED_CUTOFFS") ;;
  full)     OUTPUT_FLAGS=(--adaptive-softmax-cutoff "") ;;
  *) die "SOFTMAX must be 'adaptive' or 'full', got '$SOFTMAX'" ;;
esac

# The main job's model: its train_flags and its precision on this CPU (common.sh).
MAIN_JOB=${MAIN_JOB:-$([ "$ARCH" = "$PRESET_ARCH" ] && echo 1 || echo 0)}
if [ "$MAIN_JOB" = 1 ]; then
  main_job_flags
  set -- "${MAIN_FLAGS[@]}" "$@"  # the command line's flags, after them, win
fi

if [ "$QUICK" = 1 ]; then
  MAX_UPDATE=${MAX_UPDATE:-150}
  EXTRA_LIMITS=(--max-valid-steps 20)
else
  # DATA_BIN's own train split: its tokens size an epoch, so another corpus or
  # tokenization (spm.sh's subwords) gets EPOCHS real epochs, and the task's
  # own reader names a missing or empty split before training starts.
  ERR=$(mktemp)
  TRAIN_TOKENS=$("$PY" -m fairseq_adasoft.record train-tokens "$DATA_BIN" 2>"$ERR") \
    || die "$(tail -1 "$ERR"; rm -f "$ERR"); DATA_BIN=$DATA_BIN must be a fairseq-preprocess --destdir with a train split"
  rm -f "$ERR"
  if [ "$SCHEDULE" = time ]; then
    MAX_UPDATE=${MAX_UPDATE:-0}  # no update limit: the STOP_TIME_HOURS guard ends training as the decay ends
  elif [ -z "${MAX_UPDATE:-}" ]; then
    UPDATES_PER_EPOCH=$(( (TRAIN_TOKENS + BATCH_SIZE * TOKENS_PER_SAMPLE - 1) / (BATCH_SIZE * TOKENS_PER_SAMPLE) ))
    MAX_UPDATE=$((EPOCHS * UPDATES_PER_EPOCH / (NPROC * NNODES)))
  fi
  EXTRA_LIMITS=()
fi

LR=${LR:-$PRESET_LR}
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
  *) die "OPTIMIZER must be 'adam' or 'seed', got '$OPTIMIZER'" ;;
esac

# What makes two runs the same run: a finished one is skipped only when it matches.
SETTINGS="arch=$ARCH softmax=$SOFTMAX optimizer=$OPTIMIZER lr=$LR batch=$BATCH_SIZE"
SETTINGS+=" tokens=$TOKENS_PER_SAMPLE max_update=$MAX_UPDATE nproc=$NPROC data=$DATA_BIN extra=[$*]"
[ "$NNODES" = 1 ] || SETTINGS+=" nnodes=$NNODES"
[ "$SCHEDULE" = epochs ] || SETTINGS+=" schedule=$SCHEDULE hours=$STOP_TIME_HOURS"
if [ -s "$SAVE_DIR/checkpoint_last.pt" ] && [ -s "$SAVE_DIR/.finished" ]; then
  FINISHED=$(sed -n 's/^settings: //p' "$SAVE_DIR/.finished")
  if [ -n "$FINISHED" ] && [ "$FINISHED" != "$SETTINGS" ]; then
    echo "train: $SAVE_DIR already holds a finished run with other settings:" >&2
    echo "  there: $FINISHED" >&2
    echo "  now:   $SETTINGS" >&2
    die "set SAVE_DIR to a new directory, or move that run away; nothing was changed"
  fi
  echo "train: $SAVE_DIR already holds a finished run ($(head -1 "$SAVE_DIR/.finished")); skipping"
  exit 0
fi

if has_cuda; then
  DEVICE_FLAGS=(--fp16)
  DIST_BACKEND=nccl
  echo "train: CUDA GPU found; training on GPU ($NPROC process$([ "$NPROC" = 1 ] || echo es) per machine) in fp16" \
       "(--fp16: fp16 weights and activations, fp32 master weights in the optimizer)"
else
  DEVICE_FLAGS=(--cpu)
  DIST_BACKEND=gloo
  CPU_PROCS="$NPROC process$([ "$NPROC" = 1 ] || echo es)$([ "$NNODES" = 1 ] || echo " on each of $NNODES machines")"
  if [[ " $* " == *" --cpu-autocast-bf16 "* ]]; then
    echo "train: no CUDA GPU; training on CPU ($CPU_PROCS) with bf16 autocast matmuls and fp32 weights" \
         "(--cpu-autocast-bf16; the recurrence, softmax, loss and optimizer state in fp32)"
  else
    echo "train: no CUDA GPU; training on CPU ($CPU_PROCS) in fp32: fp32 weights and matmuls" \
         "(fairseq's --fp16 needs CUDA: its FP16Optimizer fails on CPU)"
  fi
  cpu_malloc_settings
fi

if [ "$NNODES" -gt 1 ]; then
  LAUNCH=("$VENV_BIN/torchrun" --nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK, 0 on MASTER_ADDR}"
          --master_addr "${MASTER_ADDR:?set MASTER_ADDR to the host of NODE_RANK 0}" --master_port "${MASTER_PORT:-29500}"
          --nproc_per_node "$NPROC" -m fairseq_adasoft.launch)
  DIST_FLAGS=(--distributed-backend "$DIST_BACKEND")
elif [ "$NPROC" -gt 1 ]; then
  # --standalone: a free port of its own, so that two jobs on one machine never collide.
  LAUNCH=("$VENV_BIN/torchrun" --standalone --nproc_per_node "$NPROC" -m fairseq_adasoft.launch)
  DIST_FLAGS=(--distributed-backend "$DIST_BACKEND")
else
  LAUNCH=("$VENV_BIN/fairseq-train")
  DIST_FLAGS=()
fi

mkdir -p "$SAVE_DIR"
cd "$ROOT"
"${LAUNCH[@]}" "$DATA_BIN" \
  --user-dir "$PLUGIN_DIR" \
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
