# Quick start: `make run` (bridge on 127.0.0.1:8080 with a local TTS server) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install run tts-server browser test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# The test set also runs the silma engine (CPU torch, pinned in the [silma] extra). silma-tts
# and vocos go in without their declared dependencies (torchaudio, gradio, transformers, ...),
# which cannot resolve beside the CPU torch and which the engine never imports.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,silma,otel]'
	$(BIN)/python -m pip install -q --no-deps silma-tts==1.0.5 vocos==0.1.0
	touch $@

install: $(STAMP)

# Local trials: the emulated carrier (`python -m bridge call`) signs nothing unless given a
# token, so unsigned webhooks are answered here; the bridge listens on loopback only.
run: install
	mkdir -p data
	BRIDGE_ALLOW_UNSIGNED_WEBHOOKS=$${BRIDGE_ALLOW_UNSIGNED_WEBHOOKS:-true} $(BIN)/python -m bridge serve

tts-server: install
	$(BIN)/python -m bridge tts-server

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

test: $(TEST_STAMP) browser
	$(BIN)/python -m ruff check bridge tests scripts
	$(BIN)/python -m mypy bridge tests scripts
	$(BIN)/python -m pytest -q

bench: $(TEST_STAMP)
	$(BIN)/python scripts/bench_dsp.py
	$(BIN)/python scripts/bench_piper.py
	$(BIN)/python scripts/bench_pool.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
