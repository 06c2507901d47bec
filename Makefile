# The two commands a newcomer runs: `make demo` and `make test`.
# Both create the virtual environment on first use (pinned by constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := demo-out

.PHONY: install browser test lint demo bench clean

# uv (pinned) installs the pinned set in well under a minute where pip takes minutes, most
# of them on torch's CUDA wheels; where uv cannot be had or fails, pip installs the same set. Both
# compile the bytecode: CI sets PYTHONDONTWRITEBYTECODE, so a .pyc not made here never is.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	{ $(PY) -m pip install -q -c constraints.txt uv && $(PY) -m uv pip install -q \
	    --compile-bytecode --python $(PY) -c constraints.txt -e ".[dev,export]"; } \
	  || { $(PY) -m pip install -q --upgrade pip \
	       && $(PY) -m pip install -q -c constraints.txt -e ".[dev,export]"; }
	touch $(STAMP)

install: $(STAMP)

# The studio's browser test drives Debian's chromium (never a downloaded build). Installed
# here when missing and this is root on Debian; otherwise that one test skips with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
	       >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	       apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }; }; } \
	  || echo "note: chromium not installed; the studio's browser test will be skipped"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Files run in the order tests/conftest.py sets (xdist would reorder them by test count):
# one worker builds the shared trained model while the other runs files that do not need it.
test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

demo: $(STAMP)
	$(VENV)/bin/awq-tts make-tiny $(DEMO)/tiny-trained --trained --seed 0 --force
	$(VENV)/bin/awq-tts quantize $(DEMO)/tiny-trained -o $(DEMO)/tiny-trained-awq \
		--n-samples 32 --max-seq-len 128 --force
	$(VENV)/bin/awq-tts verify $(DEMO)/tiny-trained-awq
	$(VENV)/bin/awq-tts validate $(DEMO)/tiny-trained-awq --n-prompts 12 --max-new-tokens 200 \
		--json $(DEMO)/report.json --markdown $(DEMO)/report.md
	$(VENV)/bin/awq-tts synthesize $(DEMO)/tiny-trained-awq \
		--text "Hello from a tiny Qwen3-TTS. It stops when the text ends." \
		-o $(DEMO)/tiny-trained-awq.wav

bench: $(STAMP)
	$(PY) benchmarks/quantize_layer.py
	$(PY) benchmarks/memory.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
