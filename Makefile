# Quick start: `make run` (bridge on 127.0.0.1:8080 with a local TTS server) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# SILMA's own client plugins (livekit, pipecat) for the v2 interoperability tests, in a venv of
# their own: their frameworks (livekit-agents, pipecat-ai) are heavy and must not enter ours.
PLUGINS_VENV := .venv-plugins
PLUGINS_STAMP := $(PLUGINS_VENV)/.installed
PLUGINS_REQUIREMENTS := tests/plugin_clients/requirements.txt

.PHONY: install run tts-server browser plugins-venv test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# The test set also runs the silma engine (CPU torch, pinned in the [silma] extra). silma-tts
# and vocos go in without their declared dependencies (torchaudio, gradio, transformers, ...),
# which cannot resolve beside the CPU torch and which the engine never imports; catt-tashkeel
# (the "catt" diacritizer) too, since its onnxruntime-gpu would displace onnxruntime. NeMo
# ([silma-text], about 1 GB) is tested too: tests/integration/test_silma_nemo.py; so is the
# offline speech-to-text ([stt]: tests/integration/test_stt_pocketsphinx.py).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,silma,silma-text,otel,stt]'
	$(BIN)/python -m pip install -q --no-deps silma-tts==1.0.5 vocos==0.1.0 catt-tashkeel==1.0.2
	touch $@

install: $(STAMP)

$(PLUGINS_STAMP): $(PLUGINS_REQUIREMENTS)
	$(PYTHON) -m venv $(PLUGINS_VENV)
	$(PLUGINS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PLUGINS_VENV)/bin/python -m pip install -q -r $(PLUGINS_REQUIREMENTS)
	touch $@

plugins-venv: $(PLUGINS_STAMP)

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

# BRIDGE_TEST_PLUGINS_PYTHON makes the plugin tests required: they fail, not skip, without it.
test: $(TEST_STAMP) $(PLUGINS_STAMP) browser
	$(BIN)/python -m ruff check bridge tests scripts
	$(BIN)/python -m mypy bridge tests scripts
	BRIDGE_TEST_PLUGINS_PYTHON=$(CURDIR)/$(PLUGINS_VENV)/bin/python $(BIN)/python -m pytest -q

bench: $(TEST_STAMP)
	$(BIN)/python scripts/bench_dsp.py
	$(BIN)/python scripts/bench_piper.py
	$(BIN)/python scripts/bench_pool.py

clean:
	rm -rf $(VENV) $(PLUGINS_VENV) .pytest_cache .mypy_cache .ruff_cache
