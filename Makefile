# One command each, on a fresh machine: `make test`, `make train`.
# Each installs into a local virtual environment (.venv) first when needed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test train bench-job bench-update-passes bench-file-source table2 table2-calibrate table2-kuairand table2-movielens table2-report table2-rejudge table3 table3-calibrate table3-report bench-optim bench-data bench-on-disk bench-rollback bench-sharpness sharpness sharpness-report clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# The suite in TEST_WORKERS processes (pytest-xdist); a module's tests stay
# in one process, so its fixtures (a sweep, a trained run) are built once.
# Most of a test's time is one core's Python (tracing, graph building),
# so two processes use the second core. TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope tests

# The main job's speed and Large's against this machine's peak, the whole
# job's phases, vocabulary and optimizer costs (10-15 minutes on 2 AVX-512
# cores): results/bench/job.md.
bench-job: install
	$(PY) bench/job.py --output=results/bench/job.md

# Clippy's update against Adagrad's on Large's weights, pass by pass
# (under a minute): results/bench/update_passes.md.
bench-update-passes: install
	$(PY) bench/update_passes.py --output=results/bench/update_passes.md

# Peak memory of loading a 1M- and a 5M-row Parquet log (about 8 minutes):
# results/bench/file_source_memory.md.
bench-file-source: install
	$(PY) bench/file_source_memory.py --output=results/bench/file_source_memory.md

# The main job: Large+DCN with Clippy on the synthetic stream, sized for a
# 2-core machine (configs/small_machine.gin); a new run directory each time.
RUN_DIR ?= runs/large_dcn_clippy-$(shell date +%Y%m%d-%H%M%S)
train: install
	$(PY) train.py --gin_file=configs/large_dcn_clippy.gin \
	  --gin_file=configs/small_machine.gin --model_dir=$(RUN_DIR)

# The paper's Table 2 on this machine (configs/table2_cpu.gin: 96 runs, about
# 3 hours on 2 cores): results/table2_cpu/{table2.md,claims.md,*.png}.
# Resumable: rerun after a kill and only the missing runs train.
table2: install
	$(PY) -m sweeps --gin_file=configs/table2_cpu.gin

# The naive-Adagrad learning-rate ladders behind the 1x of table2 (about 30
# minutes) and of the real-data tables (about 5 minutes each).
table2-calibrate: install
	$(PY) -m sweeps --gin_file=configs/table2_cpu_calibration.gin
	$(PY) -m sweeps --gin_file=configs/table2_kuairand_calibration.gin
	$(PY) -m sweeps --gin_file=configs/table2_movielens_calibration.gin

# Table 2 on real data from ../shared/data (about 50 and 40 minutes).
table2-kuairand: install
	$(PY) -m sweeps --gin_file=configs/table2_kuairand.gin
table2-movielens: install
	$(PY) -m sweeps --gin_file=configs/table2_movielens.gin

# Rewrites table, figures and claims from the committed results only.
table2-report: install
	$(PY) -m sweeps --gin_file=configs/table2_cpu.gin --report_only
	$(PY) -m sweeps --gin_file=configs/table2_kuairand.gin --report_only
	$(PY) -m sweeps --gin_file=configs/table2_movielens.gin --report_only
	$(PY) -m sweeps.claims_by_dataset --output=results/claims.md \
	  synthetic=results/table2_cpu kuairand=results/table2_kuairand \
	  movielens=results/table2_movielens

# Does divergence follow the edge of stability? Large+DCN at 2x, naive and
# Clippy, with the sharpness monitor (about 6 minutes):
# results/sharpness_cpu/{fig_sharpness.png,sharpness.md}.
SHARPNESS_RUNS := results/sharpness_cpu/runs
sharpness: install
	$(PY) -m sweeps --gin_file=configs/sharpness_cpu.gin
	$(MAKE) sharpness-report
sharpness-report: install
	$(PY) -m sweeps.sharpness --output_dir=results/sharpness_cpu \
	  --run_dir=$(SHARPNESS_RUNS)/large_dcn-naive-lr2x-s0 \
	  --run_dir=$(SHARPNESS_RUNS)/large_dcn-clippy-lr2x-s0

# Re-judges the committed runs with today's divergence detector (about two
# minutes): results/table2_cpu/rejudged.md.
table2-rejudge: install
	$(PY) -m sweeps --gin_file=configs/table2_cpu.gin --rejudge

# The paper's Table 3 on this machine (configs/table3_cpu.gin: naive Adagrad
# on Large+DCN and 5 changed models, 4 seeds each, 24 runs, about an hour on
# 2 cores): results/table3_cpu/table3.md. Resumable like table2.
table3: install
	$(PY) -m sweeps --gin_file=configs/table3_cpu.gin

# Clippy's learning-rate range on Large+DCN (about 40 minutes):
# results/table3_cpu_calibration/runs.csv.
table3-calibrate: install
	$(PY) -m sweeps --gin_file=configs/table3_cpu_calibration.gin

# Rewrites table3.md and runs.csv from the committed results only.
table3-report: install
	$(PY) -m sweeps --gin_file=configs/table3_cpu.gin --report_only

# Naive Adagrad at 2x on CPU Large+DCN, 3 seeds, with and without rollback
# (about 10 minutes): results/rollback/naive2x.md.
bench-rollback: install
	$(PY) bench/rollback_naive2x.py --output=results/rollback/naive2x.md

# One sharpness measurement (ranking/sharpness.py) against training steps on
# CPU Large+DCN, one thread (about 2 minutes): results/bench/sharpness_cost.md.
bench-sharpness: install
	$(PY) bench/sharpness_cost.py --output=results/bench/sharpness_cost.md

# Step time of every optimizer on the Small and Large MLPs (several minutes).
bench-optim: install
	$(PY) bench/optim_step.py --output=results/bench/optim_step.md

# Throughput and memory of the data pipelines (about a minute).
bench-data: install
	$(PY) bench/data_pipeline.py --output=results/bench/data_pipeline.md

# Memory and throughput of a prepared log on disk at 1M and 10M rows (about
# 5 minutes; needs about 6 GB free in the temporary directory).
bench-on-disk: install
	$(PY) bench/on_disk_source.py --output=results/bench/on_disk_source.md

clean:
	rm -rf $(VENV) .pytest_cache
