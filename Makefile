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

# --no-compile: Python compiles what is imported when it is first imported, not every file of torch, jax and the
# runtimes at install time
$(STAMP): pyproject.toml requirements/litert-convert.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile $(TORCH_SPEC)
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	# the LiteRT converter without its declared requirements, which conflict with ours (see the file)
	$(PY) -m pip install -q --no-compile --no-deps -r requirements/litert-convert.txt
	touch $(STAMP)

# the main job on the embedded default data (the default task); extra Hydra overrides in ARGS
train: $(STAMP)
	$(PY) train.py $(ARGS)

# pytest-xdist: one worker per core (at most 4), one torch thread each; a test file runs in one worker, so a shared run
# its tests read is made once (--dist loadgroup would be finer, but xdist 3.8 cannot group under pytest 9.2: it sets
# item._nodeid, which pytest 9.2's nodeid no longer reads). XDIST="-n 0" runs in one process.
XDIST ?= -n auto --maxprocesses 4 --dist loadfile

# the fast suite (everything not marked slow)
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(ARGS)

# the slow tests only (CI runs them after `make test`)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --durations=15 $(XDIST) $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(XDIST) $(ARGS)

benchmark: $(STAMP)
	$(PY) tools/benchmark.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
