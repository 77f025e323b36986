# make train | make test | make test-slow | make benchmark  (each sets up .venv first if needed)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the PyTorch pair this project is tested with; override for another CUDA/CPU build
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup train test test-slow test-all benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the main job on the embedded default data (the default task); extra Hydra overrides in ARGS
train: $(STAMP)
	$(PY) train.py $(ARGS)

# the fast suite (everything not marked slow)
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# the slow tests only (CI runs them after `make test`)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --durations=15 $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

benchmark: $(STAMP)
	$(PY) tools/benchmark.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
