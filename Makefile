# make run: build .venv if needed and run the default workflow (the tiny CPU world).
# make test: build .venv if needed and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
PYTEST_ARGS ?=

VERL_VENV ?= .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed-stamp

.PHONY: run test lint dryrun figures clean env-verl

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

# The verl stack (GPU trainer backend) in its own venv; reused until its pins change.
env-verl: $(VERL_STAMP)

$(VERL_STAMP): envs/verl.requirements.txt pyproject.toml
	test -x $(VERL_VENV)/bin/python || python3 -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install --quiet torch==2.13.0
	$(VERL_VENV)/bin/pip install --quiet -r envs/verl.requirements.txt
	$(VERL_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(VERL_STAMP)
