#!/usr/bin/env bash
# Gather the wheels the GPU machine lacks (it has torch 2.11, triton, accelerate, safetensors,
# onnxruntime, numpy, scipy, numba, ... but transformers 5 and no qwen-tts) into .whl/,
# at the versions constraints.txt pins, for CPython 3.12 on manylinux x86-64, one each.
# The folder is ignored by git and travels with `carry: [".whl"]` (64 MiB limit).
#
# Then, on the device tool (one call, about 8 minutes):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
#   PYTHONUNBUFFERED=1 python3 benchmarks/gpu_acceptance.py --out $OUT/acceptance
set -euo pipefail
cd "$(dirname "$0")/.."
# lazy-loader: librosa imports it first thing; the image lists it, but a missing one would
# fail every stage, and the pure-Python wheel is a few kB.
NAMES=(qwen-tts transformers tokenizers huggingface-hub autoawq accelerate librosa soundfile
       sox audioread pooch soxr decorator cffi pycparser datasets dill multiprocess zstandard
       platformdirs lazy-loader)
PY=${PYTHON:-python3}
rm -rf .whl && mkdir -p .whl
for name in "${NAMES[@]}"; do
  pin=$(grep -i "^${name//-/[-_]}==" constraints.txt | head -1 || true)
  if [ -z "$pin" ]; then
    echo "error: $name is not pinned in constraints.txt" >&2
    exit 2
  fi
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d .whl "$pin" 2>/dev/null; then
    # no binary on the index (autoawq 0.2.9 ships an sdist only): build a pure-Python wheel,
    # in pip's isolated build environment (a bare python3 has setuptools without `wheel`,
    # hence no bdist_wheel), else with what this Python has
    "$PY" -m pip wheel -q --no-deps -w .whl "$pin" 2>/dev/null \
      || "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$pin"
    if ! ls .whl | grep -i "^${name//-/[-_]}-.*-py3-none-any.whl$" >/dev/null; then
      echo "error: $pin has no wheel for CPython 3.12 manylinux x86-64" >&2
      exit 2
    fi
  fi
done
ls .whl | wc -l | xargs echo "wheels:"
du -sh .whl
