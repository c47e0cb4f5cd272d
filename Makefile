# One command each, on a fresh machine: `make test`, `make train`.
# Each installs into a local virtual environment (.venv) first when needed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test train bench-optim clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

test: install
	$(PY) -m pytest tests

train: install
	$(PY) train.py --gin_file=configs/large_dcn_clippy.gin

# Step time of every optimizer on the Small and Large MLPs (several minutes).
bench-optim: install
	$(PY) bench/optim_step.py --output=results/bench/optim_step.md

clean:
	rm -rf $(VENV) .pytest_cache
