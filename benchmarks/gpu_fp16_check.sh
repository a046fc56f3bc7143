#!/usr/bin/env bash
# CUDA / fp16 check of fairseq_adasoft on one GPU, offline.
#
# Hardware: one NVIDIA GPU (written for, and run on, the lent H100 80GB machine:
# Python 3.12, torch 2.11 + CUDA 13 preinstalled, no network, no fairseq).
# Needs the wheelhouse .gpu_wheels/ (git-ignored; carry it to the GPU machine),
# built on a machine with network access, for the GPU machine's CPython 3.12:
#   pip download --no-deps -d .gpu_wheels fairseq-fixed==0.12.3.1
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux_2_28_x86_64 -d .gpu_wheels hydra-core==1.3.2 \
#     omegaconf==2.3.0 bitarray cffi pycparser sacrebleu regex portalocker \
#     tabulate colorama lxml packaging tqdm PyYAML cython pytest pluggy iniconfig
#   pip wheel --no-deps -w .gpu_wheels antlr4-python3-runtime==4.9.3  # pure Python
# Run from the repository root:  bash benchmarks/gpu_fp16_check.sh
# Does: installs the wheelhouse offline, builds fairseq's C++/Cython extensions
# (CPU ones only: CUDA_HOME is unset, the language model needs no CUDA extension),
# installs the plugin, runs tests/unit/test_cuda.py, makes a synthetic Zipf corpus,
# trains qrnn_lm with --fp16 for 300 updates (default and explicit
# --ddp-backend pytorch_ddp, and with --qrnn-kernel triton), then fp32 and
# --amp runs for comparison. python -m benchmarks.qrnn_layer --cuda then times
# the kernels (qrnn_layer_cuda.json).
# Writes logs and gpu_fp16_check.json to $OUT (default /tmp/gpu_fp16_check).
# Expected: every tests/unit/test_cuda.py test passes; every logged fp16 train loss
# is finite and falls as fp32's and --amp's do, with no fp16 overflow; a few
# minutes in all, most of them compiling fairseq.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/gpu_fp16_check}
WORK=${WORK:-/tmp/gpu_fp16_work}
WHEELS=$ROOT/.gpu_wheels
mkdir -p "$OUT" "$WORK"
export MAX_JOBS=16 PYTHONUNBUFFERED=1
PY=python3
PIP="$PY -m pip"
BIN=$($PY -c 'import os, sys; print(os.path.dirname(sys.executable))')  # fairseq-* scripts land here
START=$SECONDS
stamp() { echo "=== [$((SECONDS - START))s] $*"; }

stamp "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
$PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

stamp "install runtime deps offline"
$PIP install -q --no-index --find-links "$WHEELS" hydra-core==1.3.2 omegaconf==2.3.0 \
  antlr4-python3-runtime==4.9.3 bitarray cffi pycparser sacrebleu regex portalocker tabulate \
  colorama lxml packaging tqdm PyYAML cython pytest

stamp "build + install fairseq-fixed"
FAIRSEQ_OK=1
PREBUILT=$(ls "$WHEELS"/fairseq_fixed-*.whl 2>/dev/null | head -1 || true)
if [ -z "$PREBUILT" ] && ls "$WHEELS"/fairseq_fixed-*.whl.part-* >/dev/null 2>&1; then
  # a wheel built by an earlier run of this script, split to come back from the GPU machine
  PART=$(ls "$WHEELS"/fairseq_fixed-*.whl.part-* | head -1)
  PREBUILT="$WORK/$(basename "${PART%.part-*}")"
  cat "$WHEELS"/fairseq_fixed-*.whl.part-* >"$PREBUILT"
fi
if [ -n "$PREBUILT" ]; then
  echo "using prebuilt $PREBUILT"
  $PIP install -q --no-index --no-deps "$PREBUILT" || FAIRSEQ_OK=0
else
  rm -rf "$WORK/fswheel"
  if (env -u CUDA_HOME $PIP wheel -v --no-index --no-build-isolation --no-deps -w "$WORK/fswheel" \
        "$WHEELS"/fairseq_fixed-0.12.3.1.tar.gz) >"$WORK/fairseq_build.log" 2>&1; then
    $PIP install -q --no-index --no-deps "$WORK"/fswheel/fairseq_fixed-*.whl || FAIRSEQ_OK=0
    # reusable on a retry (cat the parts into .gpu_wheels); $OUT takes files up to 16 MiB
    (cd "$WORK"/fswheel && for w in fairseq_fixed-*.whl; do split -b 15M -d "$w" "$OUT/$w.part-"; done) || true
  else
    FAIRSEQ_OK=0
    cp "$WORK/fairseq_build.log" "$OUT/"
  fi
  grep -E "^Building|Created wheel|error" "$WORK/fairseq_build.log" | tail -n 20 || true
fi
[ "$FAIRSEQ_OK" = 1 ] && (cd /tmp && $PY -c "import fairseq; print('fairseq', fairseq.__version__)") || FAIRSEQ_OK=0
echo "fairseq ok: $FAIRSEQ_OK"

stamp "install plugin"
# (setuptools' develop fallback re-runs pip with build isolation: keep it offline, and
# fall back to PYTHONPATH, which is all fairseq --user-dir and pytest need anyway)
PIP_NO_INDEX=1 PIP_NO_BUILD_ISOLATION=0 $PIP install -q --no-index --no-deps --no-build-isolation -e . \
  >"$WORK/plugin_install.log" 2>&1 || { echo "editable install failed (see below); using PYTHONPATH"; tail -n 5 "$WORK/plugin_install.log"; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
(cd /tmp && $PY -c "import fairseq_adasoft, os; print('plugin from', os.path.dirname(fairseq_adasoft.__file__))") \
  || echo "fairseq_adasoft does not import"

# The seed's cutoffs and the main job's tokens per stream (fairseq_adasoft/presets.py, plain Python).
eval "$($PY fairseq_adasoft/presets.py --shell)"

stamp "pytest tests/unit/test_cuda.py"
set +e
$PY -m pytest -q -p no:cacheprovider tests/unit/test_cuda.py --junitxml "$WORK/junit.xml" 2>&1
PYTEST_RC=$?
set -e

stamp "synthetic corpus"
$PY - "$WORK/corpus" <<'EOF'
import os, random, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
rng = random.Random(0)
V = 4000
words = [f"w{i:04d}" for i in range(V)]
weights = [1.0 / (i + 1) ** 1.1 for i in range(V)]  # Zipf-like unigram
succ = {w: rng.choices(words, weights, k=8) for w in words}  # some predictable structure
for split, n in (("train", 6000), ("valid", 500), ("test", 500)):
    with open(f"{d}/{split}.txt", "w") as f:
        for _ in range(n):
            w = rng.choices(words, weights)[0]; line = [w]
            for _ in range(rng.randint(8, 30)):
                w = rng.choice(succ[w]) if rng.random() < 0.7 else rng.choices(words, weights)[0]
                line.append(w)
            f.write(" ".join(line) + "\n")
EOF
wc -lw "$WORK"/corpus/*.txt

RUN_NAMES=()
if [ "$FAIRSEQ_OK" = 1 ]; then
  stamp "fairseq-preprocess"
  rm -rf "$WORK/data-bin"
  "$BIN/fairseq-preprocess" --only-source --trainpref "$WORK/corpus/train.txt" \
    --validpref "$WORK/corpus/valid.txt" --testpref "$WORK/corpus/test.txt" \
    --destdir "$WORK/data-bin" --workers 4 >"$WORK/preprocess.log" 2>&1 || echo "fairseq-preprocess failed"
  tail -n 5 "$WORK/preprocess.log"
  TRAIN=("$BIN/fairseq-train" "$WORK/data-bin" --user-dir fairseq_adasoft --task language_modeling_freqsorted
    --arch qrnn_lm --embed-dim 256 --hidden-size 512 --num-layers 3
    --adaptive-softmax-cutoff "$PRESET_SEED_CUTOFFS" --criterion adaptive_softmax --optimizer adam --lr 0.002
    --clip-norm 0.25 --batch-size 32 --tokens-per-sample "$PRESET_TOKENS_PER_SAMPLE" --max-update 300
    --log-format json --log-interval 10 --no-save)
  train() {  # name, extra args...
    local name=$1; shift
    if [ $((SECONDS - START)) -gt 450 ]; then echo "skip $name: time"; return; fi
    stamp "train $name"
    echo "${TRAIN[*]} $*" >"$WORK/cmd_$name.txt"
    set +e
    timeout 150 "${TRAIN[@]}" "$@" >"$OUT/train_$name.log" 2>&1
    echo $? >"$WORK/rc_$name.txt"
    set -e
    RUN_NAMES+=("$name")
    grep -E "train_inner|overflow|loss scale|Error|error" "$OUT/train_$name.log" | head -n 8 || true
    tail -n 3 "$OUT/train_$name.log"
  }
  train fp16 --fp16
  train fp16_triton --fp16 --qrnn-kernel triton  # the fused kernel: words/s and losses beside fp16's
  train fp16_pytorch_ddp --fp16 --ddp-backend pytorch_ddp
  train fp32
  train amp --amp
fi

stamp "benchmarks.qrnn_layer --cuda"
$PY -m benchmarks.qrnn_layer --cuda >"$OUT/qrnn_layer_cuda.log" 2>&1 || echo "qrnn_layer --cuda failed"
cp benchmarks/results/qrnn_layer_cuda.json "$OUT/" 2>/dev/null || true
tail -n 12 "$OUT/qrnn_layer_cuda.log"

stamp "summary"
$PY - "$OUT/gpu_fp16_check.json" "$WORK" "$FAIRSEQ_OK" "$PYTEST_RC" "${RUN_NAMES[@]}" <<'EOF'
import json, math, os, re, sys, xml.etree.ElementTree as ET
import torch
dest, work, fairseq_ok, pytest_rc, names = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5:]
out = os.path.dirname(dest)
s = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
     "fairseq_built": fairseq_ok, "fairseq_cuda_extensions": False,
     "script": "bash benchmarks/gpu_fp16_check.sh", "pytest_rc": pytest_rc}
try:
    ts = ET.parse(f"{work}/junit.xml").getroot()
    ts = ts if ts.tag == "testsuite" else ts[0]
    s["test_cuda"] = {k: int(ts.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    s["test_cuda"]["failed"] = [c.get("name") for c in ts.iter("testcase")
                                if c.find("failure") is not None or c.find("error") is not None]
except Exception as e:
    s["test_cuda"] = {"error": repr(e)}
if not fairseq_ok:
    log = f"{work}/fairseq_build.log"
    s["fairseq_build_tail"] = open(log).read()[-3000:] if os.path.exists(log) else None
else:
    s["fairseq_build_tail"] = None
num = lambda v: float(v) if v not in (None, "") else None
runs = {}
for n in names:
    text = open(f"{out}/train_{n}.log").read()
    inner = [json.loads(m) for m in re.findall(r"\| train_inner \| (\{.*\})", text)]
    epochs = [json.loads(m) for m in re.findall(r"\| train \| (\{.*\})", text)]
    valid = [json.loads(m) for m in re.findall(r"\| valid \| (\{.*\})", text)]
    losses = [num(d.get("loss")) for d in inner]
    r = {"command": open(f"{work}/cmd_{n}.txt").read().strip(), "returncode": int(open(f"{work}/rc_{n}.txt").read()),
         "updates": [int(d["num_updates"]) for d in inner], "train_loss": losses,
         "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
         "any_nonfinite_loss": any(l is None or not math.isfinite(l) for l in losses) or not losses,
         "loss_scale": [num(d.get("loss_scale")) for d in inner if "loss_scale" in d],
         "overflow_messages": len(re.findall(r"gradient overflow detected", text)),
         "loss_scale_set_to": [float(x) for x in re.findall(r"setting loss scale to: ([0-9]+(?:\.[0-9]+)?)", text)],
         "nan_inf_in_log": bool(re.search(r"\b(nan|inf)\b", " ".join(map(json.dumps, inner + epochs + valid)))),
         "wps": [num(d.get("wps")) for d in inner],
         "epoch_train_wps": [num(d.get("train_wps")) for d in epochs],
         "valid_loss": [num(d.get("valid_loss")) for d in valid],
         "error_tail": None}
    w = [x for x in r["wps"][2:] if x] or [x for x in r["wps"] if x]
    r["wps_mean_after_warmup"] = sum(w) / len(w) if w else None
    if r["returncode"] != 0:
        r["error_tail"] = text[-3000:]
    runs[n] = r
s["train_runs"] = runs
json.dump(s, open(dest, "w"), indent=1)
print(json.dumps({k: v for k, v in s.items() if k != "train_runs"}, indent=1))
for n, r in runs.items():
    print(n, "rc", r["returncode"], "first", r["first_loss"], "last", r["last_loss"], "nonfinite", r["any_nonfinite_loss"],
          "overflows", r["overflow_messages"], "scale", r["loss_scale"][:3], "...", r["loss_scale"][-1:], "wps", r["wps_mean_after_warmup"])
EOF
stamp "done"
[ "$PYTEST_RC" = 0 ] && [ "$FAIRSEQ_OK" = 1 ]
