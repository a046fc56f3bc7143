# What the WikiText-2 recipes share; sourced by each, never run. Sets the
# paths, the interpreter PY (fairseq's fairseq-* scripts stand beside it in
# VENV_BIN), where results files go, and helpers that read the package.
#
# Knobs (environment): VENV_BIN (default: the checkout's .venv/bin, which
# scripts/setup_env.sh builds; any environment with fairseq and this package
# installed will do), DATA_BIN, CKPT_ROOT, BENCHMARK_RESULTS_DIR, QUICK.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/recipes/wikitext2
RECIPE=$(basename "$0" .sh)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
PY=$VENV_BIN/python
DATA_BIN=${DATA_BIN:-$ROOT/data-bin/wikitext-2}
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

has_cuda() { "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; }

# glibc's malloc otherwise hands large activations back to the OS after every
# training step and maps them again on the next.
cpu_malloc_settings() { export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000; }
