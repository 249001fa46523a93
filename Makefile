# The README's two commands: `make demo` and `make test`. Everything a fresh machine needs is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# On these CPU machines a torch 2.13.0 CPU wheel lies on disk; an unpinned install would fetch a multi-GB CUDA
# build. A torch already in the venv (a user's cluster build) is kept and pinned instead.
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out
# loadgroup: tests marked xdist_group (the per-layout ids of one multi-process launch) share a worker.
PYTEST_ARGS ?= -n 2 --dist loadgroup
# 2 threads per process on 2 busy cores made torch 50-100x slower.
export OMP_NUM_THREADS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install install-dev system-deps test-system-deps clean

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out $(DEMO_OUT)

# The import contract (.importlinter: stages import earlier stages only, no cycles) first, then the suite.
test: $(VENV)/.installed-dev
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest tests $(PYTEST_ARGS)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.torch:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==$(TORCH_VERSION)"
	@$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/constraints.txt
	@echo "pinned $$(cat $(VENV)/constraints.txt) for every later install"
	@touch $@

$(VENV)/.installed: setup.py Makefile $(VENV)/.torch | system-deps
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[audio]"
	@touch $@

$(VENV)/.installed-dev: setup.py Makefile $(VENV)/.installed | test-system-deps
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[audio,dev]"
	@touch $@

# Debian packages the demo and tests use: espeak-ng (+ its C library) synthesises speech, sox handles audio.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 || missing="$$missing libespeak-ng1"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The tests also start a real single-node Slurm cluster (slurmctld + slurmd + munge) to run the sbatch scripts.
test-system-deps: system-deps
	@missing=""; \
	for c in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info
