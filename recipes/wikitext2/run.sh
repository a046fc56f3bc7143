#!/usr/bin/env bash
# The main job, from a fresh clone: set up the environment, prepare WikiText-2,
# train the main job's model (fairseq_adasoft/presets.py: qrnn_lm_wikitext2
# with stateful BPTT, an adaptive softmax tied to the embedding, bf16 matmuls)
# for an hour of 2 CPU cores, evaluate it under five protocols (protocols.sh:
# with the continuous cache and dynamic evaluation tuned on valid), and record
# the result.
#
# Hardware: 2 CPU cores with bf16 instructions (AVX-512 BF16 or AMX); no GPU
#           needed. Elsewhere bf16 is far slower than fp32
#           (benchmarks/results/cpu_bf16_avx2.json), so the model trains in fp32
#           at a narrower width, and its perplexity is higher.
# Schedule: the learning rate decays over the hour guard's hours of training,
#           however many updates this machine fits in them (SCHEDULE=time in
#           train.sh); EPOCHS=N decays over N epochs instead; QUICK=1 runs 150
#           updates, but the evaluations and the cache tuning still read whole splits.
# Expected: about an hour of training, then about a quarter of an hour of
#           tuning and evaluation (protocols.sh). Phase times and perplexities
#           as recorded, in benchmarks/results/: wikitext2_main_bf16.json and,
#           QUICK=1, wikitext2_main_quick_bf16.json.
# Result:   prints the validation and test perplexity; writes $RESULTS_DIR/$NAME.json
#           (the training, every protocol and tuning, the phases' wall times);
#           NAME defaults to wikitext2_main[_quick].
# Knobs:    NAME, SAVE_DIR, QUICK, EPOCHS, LR, STOP_TIME_HOURS, BATCH_SIZE,
#           TOKENS_PER_SAMPLE (defaults: the presets), common.sh's; arguments
#           are extra fairseq-train flags for a variant (e.g. --dropout 0.3),
#           kept in the results' command and config.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export QUICK
# NAME: the results files' name, e.g. to keep a run on other hardware beside the recorded one.
NAME=${NAME:-wikitext2_main${QUICK_SUFFIX//-/_}}
export SAVE_DIR=${SAVE_DIR:-$CKPT_ROOT/$NAME}

phase setup bash "$ROOT/scripts/setup_env.sh"
load_presets
probe_cuda  # once, for every recipe below

# train.sh trains the main job's model and settings when run bare: its flags, as train.sh
# chooses them for this CPU (common.sh), are recorded with the run.
main_job_flags
if [ "$MAIN_PRECISION" = fp32 ]; then
  echo "run: this CPU has no bf16 matmul instructions (AVX512-BF16 or AMX): training in fp32;" \
       "expect a higher perplexity than the recorded bf16 run" >&2
fi
export LR=${LR:-$PRESET_LR} STOP_TIME_HOURS=${STOP_TIME_HOURS:-$PRESET_STOP_TIME_HOURS}
# The batch shape (streams x tokens per stream), which train.sh reads; recorded with the run.
# Half the streams did no better over the fp32 hour (docs/experiments/wikitext2-cpu-hour.md, step 11).
export BATCH_SIZE=${BATCH_SIZE:-$PRESET_BATCH_SIZE} TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-$PRESET_TOKENS_PER_SAMPLE}
# The learning rate decays over the guard's hours, however many epochs this machine
# fits in them (SCHEDULE=time): a fixed epoch count left part of the hour unused on
# fast machines and was cut short on slower ones.
if [ "$QUICK" = 1 ]; then
  export SCHEDULE=epochs  # train.sh's QUICK update count sets the schedule's length
  SCHEDULE_TEXT="train.sh's QUICK=1 updates"
  RUN_VARS="LR=$LR"
elif [ -n "${EPOCHS:-}" ]; then
  export SCHEDULE=epochs EPOCHS
  SCHEDULE_TEXT="$EPOCHS epochs"
  RUN_VARS="LR=$LR EPOCHS=$EPOCHS"
else
  export SCHEDULE=time
  SCHEDULE_TEXT="$STOP_TIME_HOURS hours of training (timed_polynomial_decay)"
  RUN_VARS="LR=$LR STOP_TIME_HOURS=$STOP_TIME_HOURS"
fi
RUN_VARS+=" BATCH_SIZE=$BATCH_SIZE TOKENS_PER_SAMPLE=$TOKENS_PER_SAMPLE"
EXTRA_TEXT=$([ $# -eq 0 ] || printf ' %q' "$@")

phase prepare bash "$HERE/prepare.sh"
phase train bash "$HERE/train.sh" "$@"
phase eval_valid env SUBSET=valid bash "$HERE/eval.sh"
phase eval_test env SUBSET=test bash "$HERE/eval.sh"
phase eval_classic env RECORD=0 bash "$HERE/protocols.sh"

cd "$ROOT"
"$PY" -m fairseq_adasoft.record run --results-dir "$RESULTS_DIR" --protocols \
  --name "$NAME" \
  --command "QUICK=$QUICK NAME=$NAME $RUN_VARS bash recipes/wikitext2/run.sh$EXTRA_TEXT" \
  --config "$PRESET_ARCH, ${MAIN_FLAGS[*]}$EXTRA_TEXT, adaptive softmax [V/15, 3V/15] div 4, Adam lr $LR polynomial decay over $SCHEDULE_TEXT, $BATCH_SIZE streams x $TOKENS_PER_SAMPLE tokens (see recipes/wikitext2/train.sh)" \
  --save-dir "$SAVE_DIR" \
  --phase-seconds "${PHASES[@]}"
