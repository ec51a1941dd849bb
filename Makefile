# The two set-up commands: `make lab` and `make test`. Each sets itself up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint venv postgres-deps engines-deps bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

# JupyterLab with the extension (core and agents inside the Jupyter server, on the
# embedded default: SQLite in the Jupyter data dir, local worker processes).
lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=$(CURDIR)/notebooks

postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql)

# Real workload engines on loopback for the backend tests: Slurm (Debian slurm-wlm + munge)
# and HTCondor (minicondor in a Debian 13 chroot). Installs once; the tests start them.
engines-deps:
	bash ci/engines/slurm.sh deps
	bash ci/engines/htcondor.sh deps

lint: $(STAMP)
	$(BIN)/ruff check idds_jupyter server_ext tests bench notebooks/conftest.py
	$(BIN)/mypy

# pytest runs last so its summary line closes the log; the notebooks are tests too (nbval).
test: $(STAMP) postgres-deps engines-deps lint
	$(BIN)/pytest -q -p no:cacheprovider tests notebooks --nbval-lax --nbval-kernel-name idds

bench: $(STAMP)
	$(BIN)/python bench/dag_release.py --jobs 100000 --engine dask

clean:
	rm -rf $(VENV) .idds
