#!/usr/bin/env bash
# Rehearse the GPU run's environment on this CPU machine before a device minute is spent:
# a Python 3.12 venv holding what the GPU image holds (versions from the device tool's
# KINDS.md: transformers 5, huggingface_hub 1.x, numpy 2.5, ...; the rest at PyPI's latest),
# the `.whl/` bundle installed on top exactly as the README's device command does, then the
# acceptance script's dry run with every stage in its own process. About 6 minutes (3.5 of
# them the venv, reused on a second run). Usage: bash scripts/gpu_env_check.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/awq-tts-gpu-env}
PY312=${PY312:-}
for candidate in python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python3.12"; do
  # a pyenv shim exists even where it cannot run: try each one
  [ -n "$PY312" ] || ! "$candidate" --version >/dev/null 2>&1 || PY312=$candidate
done
[ -n "$PY312" ] || { echo "error: no runnable python3.12; set PY312=/path/to/python3.12"; exit 2; }
[ -d .whl ] || bash scripts/gpu_wheels.sh
if [ ! -x "$VENV/bin/python" ]; then
  "$PY312" -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0 torchaudio==2.11.0 triton==3.6.0 numpy==2.5.2 \
    accelerate==1.15.0 safetensors==0.8.0 tokenizers==0.23.2 transformers==5.17.0 \
    huggingface_hub==1.33.0 onnxruntime==1.30.0 scipy numba scikit-learn pandas sentencepiece \
    einops matplotlib rich tqdm click pytest pytest-xdist filelock psutil pyyaml regex \
    requests msgpack joblib threadpoolctl pyarrow xxhash fsspec aiohttp httpx jinja2 pillow \
    protobuf sympy networkx
fi
SITE=$(mktemp -d)
OUT=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$SITE" .whl/*.whl
PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 "$VENV/bin/python" benchmarks/gpu_acceptance.py \
  --out "$OUT/acceptance" --device cpu --tiny --work "$OUT/work"
echo "report: $OUT/acceptance/gpu_acceptance.md"
"$VENV/bin/python" - "$OUT/acceptance/gpu_acceptance.json" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
bad = [stage for stage, row in result.items() if isinstance(row, dict) and (
    "error" in row or any(isinstance(v, dict) and "error" in v for v in row.values()))]
print("every stage ran" if not bad else f"stages with errors: {', '.join(bad)}")
sys.exit(1 if bad else 0)
EOF
