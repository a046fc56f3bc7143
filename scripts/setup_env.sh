#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv with torch, fairseq and this plugin.
#
# Hardware: any; a fresh machine needs minutes (fairseq compiles C++
# extensions), a second run takes seconds.
# TORCH_SPEC picks the torch build, e.g. for CUDA 12.1:
#   TORCH_SPEC="torch==2.4.1 --index-url https://download.pytorch.org/whl/cu121"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
READY_CHECK="import torch, fairseq, sentencepiece, tensorboard, pytest, xdist, matplotlib, fairseq_adasoft, os, sys; \
sys.exit(os.path.dirname(os.path.dirname(fairseq_adasoft.__file__)) != '$ROOT')"

if [ -x "$VENV/bin/python" ] && (cd /tmp && "$VENV/bin/python" -c "$READY_CHECK") 2>/dev/null; then
  echo "setup: $VENV is ready"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# torch first: otherwise fairseq's dependency on torch may pull a multi-GB CUDA build.
$PIP install $TORCH_SPEC
$PIP install numpy cython
# fairseq-fixed builds C++ extensions against the torch above, hence no isolation.
$PIP install --no-build-isolation -e "$ROOT[test]"
(cd /tmp && "$VENV/bin/python" -c "$READY_CHECK") || {
  echo "setup: $VENV was built but fairseq_adasoft does not import from $ROOT" >&2
  exit 1
}
echo "setup: $VENV is ready"
