# make run: build .venv if needed and run the default workflow (the tiny CPU world).
# make test: build .venv if needed and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
PYTEST_ARGS ?=

.PHONY: run test lint dryrun figures clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) < /dev/null

test: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint < /dev/null

dryrun: $(STAMP)
	$(VENV)/bin/snakemake -n --cores $(CORES) < /dev/null

figures: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) figures < /dev/null

clean:
	rm -rf results .snakemake
