# The two set-up commands: `make lab` and `make test`. Each sets itself up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint docs venv install-check postgres-deps engines-deps isolation-deps labextension ui-deps bench clean hub hub-deps rucio-deps

# PyTorch (the hpo-gp extra, for Optuna's GPSampler) is installed first, pinned to the CPU
# build: a plain `torch` requirement would pull a CUDA build of several GB.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

# JupyterLab with the extension (core and agents inside the Jupyter server, on the
# embedded default: SQLite in the Jupyter data dir, local worker processes).
lab: $(STAMP) labextension
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=$(CURDIR)/notebooks

postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql)

# sudo, for the isolation tests whose service is not root (tests/api/test_api_isolation_sudo.py).
isolation-deps:
	@command -v sudo >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends sudo)

# A real Rucio server for the data-carousel tests: its own venv (rucio, gunicorn, psycopg),
# installed once outside the repo (ci/rucio.sh; tests/rucio_server.py starts it on loopback).
rucio-deps:
	bash ci/rucio.sh deps

# Real workload engines on loopback for the backend tests: Slurm (Debian slurm-wlm + munge)
# and HTCondor (minicondor in a Debian 13 chroot). Installs once; the tests start them.
engines-deps:
	bash ci/engines/slurm.sh deps
	bash ci/engines/htcondor.sh deps

# The documentation site (MkDocs, API reference from the docstrings); warnings are errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check idds_jupyter server_ext tests bench notebooks/conftest.py
	$(BIN)/ruff format --check idds_jupyter server_ext tests bench notebooks/conftest.py
	$(BIN)/mypy
	cd labextension && npx eslint src && npx prettier --check src

# What `pip install idds-jupyter` gives, without extras: the wheel in a clean venv runs a
# workflow and serves the extension; a worker-node venv runs a job (ci/install_check.sh).
install-check: $(STAMP)
	bash ci/install_check.sh

# pytest runs last so its summary line closes the log; the notebooks are tests too (nbval).
test: $(STAMP) postgres-deps isolation-deps engines-deps ui-deps hub-deps rucio-deps lint docs install-check
	$(BIN)/pytest -q -p no:cacheprovider --durations=25 tests notebooks --nbval-lax --nbval-kernel-name idds

bench: $(STAMP) postgres-deps ui-deps
	$(BIN)/python bench/dag_release.py --jobs 100000 --engine dask
	$(BIN)/python bench/peers.py  # FaaT vs Dask, Ray, Parsl, ipyparallel: pip install -e '.[bench]'
	$(BIN)/python bench/dag_release.py --jobs 10000,100000,1000000 --db sqlite --db postgres \
		--plot bench/results/dag_release_scaling.png
	$(BIN)/python bench/dag_release.py --jobs 100000 --db postgres --runners 1 --runners 2 \
		--profile bench/results/profile
	$(BIN)/python bench/engines_dag.py --jobs 10000 --engine dask
	$(BIN)/python bench/metrics_scrape.py --jobs 100000 --interval 1
	$(BIN)/python bench/bus_throughput.py --events 200000 --batch 100
	$(BIN)/python bench/server_responsiveness.py --jobs 100000
	$(BIN)/python bench/hpo_overhead.py --trials 1000 --trial-seconds 0.1 --parallel 8
	$(BIN)/python bench/fair_share.py
	$(BIN)/python bench/provenance_cache.py
	cd labextension && node_modules/.bin/vite-node ../bench/dag_overview.ts 1000 10000
	node bench/hpo_view_plots.cjs --reps 5

# configurable-http-proxy (npm) for the JupyterHub tests (tests/hub) and `make hub`.
ci/hub/node_modules/.package-lock.json: ci/hub/package-lock.json
	cd ci/hub && npm ci --no-audit --no-fund

hub-deps: ci/hub/node_modules/.package-lock.json

# A demo JupyterHub on this machine: users alice and bob with a password, the shared
# iDDS service managed by the hub (examples/jupyterhub_config.py); prints the URL to open.
hub: $(STAMP) hub-deps labextension
	BIN=$(BIN) bash ci/hub.sh

# The JupyterLab extension (TypeScript in labextension/, built into idds_jupyter/labextension).
LABEXT_SRC := $(shell find labextension/src labextension/style labextension/schema -type f 2>/dev/null) \
              labextension/package.json labextension/tsconfig.json
LABEXT_BUILT := idds_jupyter/labextension/static/style.js
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/idds-jupyter

labextension/node_modules/.package-lock.json: labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund

$(LABEXT_BUILT): $(LABEXT_SRC) labextension/node_modules/.package-lock.json | $(STAMP)
	cd labextension && PATH="$(CURDIR)/$(BIN):$$PATH" npm run build:prod
	touch $@

labextension: $(LABEXT_BUILT)
	rm -rf $(LABEXT_LINK) && ln -s $(CURDIR)/idds_jupyter/labextension $(LABEXT_LINK)

labextension/ui-tests/node_modules/.package-lock.json: labextension/ui-tests/package-lock.json
	cd labextension/ui-tests && npm ci --no-audit --no-fund

# UI tests drive Debian's Chromium (never a downloaded browser).
ui-deps: labextension labextension/ui-tests/node_modules/.package-lock.json
	@test -x /usr/bin/chromium || (apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium)

clean:
	rm -rf $(VENV) .idds labextension/node_modules labextension/ui-tests/node_modules \
	  labextension/lib idds_jupyter/labextension

.PHONY: soak mutate

# The chaos suite at full size (tests/chaos: 10 SIGKILLs of the server under a 10,000-job
# DAG, a FaaT map and an HPO study; 3 PostgreSQL restarts; bigger fuzzing); `make test`
# runs it sized for CI. -s: each test prints its figures.
soak: $(STAMP) postgres-deps
	IDDS_SOAK=1 $(BIN)/pytest -q -s -p no:cacheprovider tests/chaos

# Mutation testing (mutmut 3, configured in pyproject's [tool.mutmut]) of the release,
# claim, condition and authorization code. MUTANTS narrows it to a glob of mutant names,
# e.g. make mutate MUTANTS='idds_jupyter.store.jobs.x_release_children*'
MUTANTS ?=
# The hub authenticator's tests start a real JupyterHub with the proxy from ci/hub.
mutate: $(STAMP) hub-deps
	$(BIN)/pip install -q 'mutmut>=3.3'
	IDDS_HUB_PROXY=$(CURDIR)/ci/hub/node_modules/.bin/configurable-http-proxy \
		$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/mutmut results
