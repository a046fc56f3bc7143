# What the WikiText recipes share (recipes/wikitext2, recipes/wikitext103);
# sourced by each, never run. Sets the
# paths, the interpreter PY (fairseq's fairseq-* scripts stand beside it in
# VENV_BIN), where results files go, and helpers that read the package.
#
# Knobs (environment): VENV_BIN (default: the checkout's .venv/bin, which
# scripts/setup_env.sh builds; any environment with fairseq and this package
# installed will do), DATA_BIN (default data-bin/$CORPUS), CKPT_ROOT,
# BENCHMARK_RESULTS_DIR, QUICK.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/recipes/wikitext2
RECIPE=$(basename "$0" .sh)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
PY=$VENV_BIN/python
CORPUS=${CORPUS:-wikitext-2}  # recipes/wikitext103 sets wikitext-103
DATA_BIN=${DATA_BIN:-$ROOT/data-bin/$CORPUS}
CKPT_ROOT=${CKPT_ROOT:-$ROOT/checkpoints}
# The checkout's results files; tests point BENCHMARK_RESULTS_DIR elsewhere to keep them untouched.
RESULTS_DIR=${BENCHMARK_RESULTS_DIR:-$ROOT/benchmarks/results}
QUICK=${QUICK:-0}
QUICK_SUFFIX=$([ "$QUICK" = 1 ] && echo -quick || true)

die() { echo "$RECIPE: $*" >&2; exit 1; }

# PLUGIN_DIR (fairseq's --user-dir: the installed package, wherever it is) and
# the PRESET_* settings of fairseq_adasoft/presets.py. presets.py is plain
# Python, run as a file so that reading it does not import torch and fairseq.
load_presets() {
  PLUGIN_DIR=$("$PY" -c 'import importlib.util as u; print(u.find_spec("fairseq_adasoft").submodule_search_locations[0])') \
    || die "fairseq_adasoft is not installed for $PY: run scripts/setup_env.sh or set VENV_BIN"
  eval "$("$PY" "$PLUGIN_DIR/presets.py" --shell)"
}

# MAIN_FLAGS: the main job's flags beyond its architecture (presets.MAIN_JOB's train_flags) and
# its precision on this CPU. bf16 matmuls need AVX512-BF16 or AMX; elsewhere torch runs them
# slower than fp32, so the model refuses to train that way, and the job trains in fp32 at a
# narrower width, which fits enough more epochs in the hour to do better (step 12 of
# docs/experiments/wikitext2-cpu-hour.md).
# MAIN_PRECISION says which. Needs load_presets.
main_job_flags() {
  read -ra MAIN_FLAGS <<< "$PRESET_TRAIN_FLAGS"
  if [ "$("$PY" "$PLUGIN_DIR/hardware.py")" = 1 ]; then
    # The architecture's dropout: more did worse over a bf16 hour (docs/experiments/wikitext2-cpu-hour.md, step 14).
    MAIN_FLAGS+=(--cpu-autocast-bf16)
    MAIN_PRECISION=bf16
  else
    MAIN_FLAGS+=(--hidden-size "$PRESET_FP32_HIDDEN_SIZE")
    MAIN_PRECISION=fp32
  fi
}

# How many CUDA GPUs torch sees, asked once per top-level recipe (importing
# torch takes seconds) and passed on to the recipes it runs in CUDA_DEVICES.
probe_cuda() {
  [ -n "${CUDA_DEVICES:-}" ] \
    || export CUDA_DEVICES=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
}
has_cuda() { probe_cuda; [ "$CUDA_DEVICES" -gt 0 ]; }

declare -a PHASES=()
phase() {  # phase NAME COMMAND...: run it, say when it starts and how long it took, keep that in PHASES
  local name=$1 start=$SECONDS
  shift
  echo "$RECIPE: [$name] starting"
  "$@"
  PHASES+=("$name=$((SECONDS - start))")
  echo "$RECIPE: [$name] done in $((SECONDS - start)) s"
}

# glibc's malloc otherwise hands large activations (and dynamic evaluation's
# gradients) back to the OS after every step and maps them again on the next.
cpu_malloc_settings() { export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000; }
