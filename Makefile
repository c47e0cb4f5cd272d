# One command each, on a fresh machine: `make test`, `make train`.
# Each installs into a local virtual environment (.venv) first when needed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test train bench-optim bench-data clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

test: install
	$(PY) -m pytest tests

# The main job: Large+DCN with Clippy on the synthetic stream, sized for a
# 2-core machine (configs/small_machine.gin); a new run directory each time.
RUN_DIR ?= runs/large_dcn_clippy-$(shell date +%Y%m%d-%H%M%S)
train: install
	$(PY) train.py --gin_file=configs/large_dcn_clippy.gin \
	  --gin_file=configs/small_machine.gin --model_dir=$(RUN_DIR)

# Step time of every optimizer on the Small and Large MLPs (several minutes).
bench-optim: install
	$(PY) bench/optim_step.py --output=results/bench/optim_step.md

# Throughput and memory of the data pipelines (about a minute).
bench-data: install
	$(PY) bench/data_pipeline.py --output=results/bench/data_pipeline.md

clean:
	rm -rf $(VENV) .pytest_cache
