# The two set-up commands: `make lab` and `make test`. Each sets itself up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint venv postgres-deps bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Until the Jupyter extension lands, `make lab` runs the standalone core on the
# embedded default (SQLite in .idds/, local worker processes) and an example.
lab: $(STAMP)
	IDDS_HOME=$(CURDIR)/.idds $(BIN)/idds-jupyter run examples/branch_and_loop.yaml
	@echo "--- serving the core on $(CURDIR)/.idds (Ctrl-C to stop)"
	IDDS_HOME=$(CURDIR)/.idds $(BIN)/idds-jupyter serve

postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql)

lint: $(STAMP)
	$(BIN)/ruff check idds_jupyter tests bench
	$(BIN)/mypy

# pytest runs last so its summary line closes the log.
test: $(STAMP) postgres-deps lint
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/dag_release.py --jobs 100000 --engine dask

clean:
	rm -rf $(VENV) .idds
