# Two commands for a fresh machine:
#   make demo   create .venv, install, run `tuneforge quickstart` on the bundled model
#   make test   create .venv, install with dev extras, run the test suite (what CI runs)
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: the CPU build lies on local disk; anything else would pull CUDA.
$(VENV)/.installed: pyproject.toml scripts/install.sh | $(BIN)/python
	bash scripts/install.sh $(VENV)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/tuneforge quickstart

test: install
	bash scripts/test.sh $(VENV)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/pip install -q -e ".[bench]"  # the peers we measure against (TRL)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
