# Two commands set everything up on a fresh machine (the venv holds the service, installed
# editable, and puts this folder's development tools, simulator/ bench/ trainers/, on its path):
#   make run N=1000   generate (or resume) a run (MODE=batch: through the provider's Batch API;
#                     WORKERS=K: on K Ray workers, a local cluster or $RAY_ADDRESS)
#   make test         run the test suite
# and `make bench` prints the benchmark figures (SECTIONS="..." to pick some, QUICK=1 for the
# scaled-down versions the test suite runs);
# `make chaos` kills and resumes a run N=500 10 times, then runs it through a fault storm;
# `make check-trainers` / `make check-datasets OUT=dir`: the export against real trainers and
# datasets versions (each installed into its own throw-away venv; not part of `make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

N ?=
CONFIG ?= config.yaml
PERSONAS ?=
OUT ?=
GENERATOR ?=
MODE ?=
WORKERS ?=
CHAOS_ARGS ?=
QUICK ?=

RUN_ARGS := --config $(CONFIG) $(if $(N),-n $(N)) $(if $(PERSONAS),--personas $(PERSONAS)) \
	$(if $(OUT),--out $(OUT)) $(if $(GENERATOR),--generator $(GENERATOR)) \
	$(if $(MODE),--mode $(MODE)) $(if $(WORKERS),--workers $(WORKERS))

.PHONY: run test bench chaos lint format clean check-trainers check-datasets

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "agentrefine-dev-tools.pth").write_text("$(CURDIR)\n")'
	touch $(STAMP)

# WORKERS=K: the sample stages on K Ray workers (a local cluster, or $$RAY_ADDRESS); Ray is the
# optional extra `cluster`, installed here the first time it is asked for
CLUSTER_STAMP := $(VENV)/.cluster-stamp

$(CLUSTER_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	touch $(CLUSTER_STAMP)

run: $(STAMP) $(if $(filter-out 0,$(WORKERS)),$(CLUSTER_STAMP))
	$(PY) -m service run $(RUN_ARGS)

test: $(CLUSTER_STAMP)
	$(PY) -m pytest -q

bench: $(CLUSTER_STAMP)
	$(PY) -m bench $(if $(QUICK),--quick) $(SECTIONS)

chaos: $(STAMP)
	$(PY) -m bench.chaos $(CHAOS_ARGS)

# Each trainer from pip in its own throw-away venv (.trainer-venvs/), its own data code on 50
# exported samples (or OUT=run_dir): trained tokens = the train:true assistant turns (README).
check-trainers: $(STAMP)
	$(PY) -m trainers.check $(if $(OUT),--out $(OUT)) $(CHECK_TRAINERS_ARGS)

# The training shards of OUT=run_dir loaded by datasets 2.21, 3.2 and the current release.
check-datasets: $(STAMP)
	$(PY) -m trainers.datasets_versions $(or $(OUT),runs/default)

# ruff, then the import contracts of pyproject.toml ([tool.importlinter]): layers, no cycles
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache
