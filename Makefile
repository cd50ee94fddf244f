# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.system-deps
TORCH := torch==2.14.1 torchaudio==2.11.0
SYSTEM_TOOLS := ffmpeg sox chromium
# Recorded human voice prompts (CC-BY-SA 3.0) behind the `prompts` real-speech dataset (docs/prompts.md).
PROMPT_PACKAGES := asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 \
  asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722 asterisk-prompt-it-menardi-wav asterisk-prompt-es-co \
  asterisk-prompt-fr-armelle

.PHONY: demo test install system-deps clean bench docs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Debian tools: ffmpeg (codecs), sox + TTS engines (corpus script), chromium (HTML report test), voice prompts.
$(APT_STAMP): | $(BIN)/python
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if command -v dpkg >/dev/null 2>&1; then for p in $(PROMPT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; fi; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing system tools:$$missing (install them with your package manager)"; fi; \
	fi
	@touch $@

$(STAMP): pyproject.toml sec4sr_plugins_*/pyproject.toml $(APT_STAMP) | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --config-settings editable_mode=compat -e ".[test,ray]" -e "sec4sr_plugins_models[onnx]" -e sec4sr_plugins_defenses -e sec4sr_plugins_attacks
	$(BIN)/pip install -q --no-deps resemblyzer==0.1.4
	@touch $@

install: $(STAMP)

# the Debian packages alone (ffmpeg, sox, chromium, the voice prompts)
system-deps: $(APT_STAMP)

# The demo study (examples/demo.toml): prints the table, writes demo-out/results.sqlite and demo-out/report.html.
demo: $(STAMP)
	$(BIN)/sec4sr run examples/demo.toml --out demo-out --report

test: $(STAMP)
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) demo-out .pytest_cache
