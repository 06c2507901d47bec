# The two commands a newcomer runs: `make demo` and `make test`.
# Both create the virtual environment on first use (pinned by constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := demo-out

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/awq-tts make-tiny $(DEMO)/tiny-base --seed 0 --force
	$(VENV)/bin/awq-tts quantize $(DEMO)/tiny-base -o $(DEMO)/tiny-base-awq \
		--n-samples 16 --max-seq-len 96 --force
	$(VENV)/bin/awq-tts verify $(DEMO)/tiny-base-awq
	$(VENV)/bin/awq-tts synthesize $(DEMO)/tiny-base-awq --text "Hello from a tiny Qwen3-TTS." \
		--max-new-tokens 60 -o $(DEMO)/tiny-base-awq.wav

bench: $(STAMP)
	$(PY) benchmarks/quantize_layer.py
	$(PY) benchmarks/memory.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
