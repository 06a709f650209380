# The two commands: `make reproduce` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch is served from this machine's disk; plain pip, no uv/poetry.
TORCH   := torch==2.14.1 torchvision==0.29.1

.PHONY: test reproduce bench bench-gpu venv clean

venv: $(STAMP)

# Re-install when pyproject.toml changes (the stamp is older than it).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

reproduce: $(STAMP)
	$(BIN)/cnnlab reproduce --out runs/reproduce

bench: $(STAMP)
	$(BIN)/python benchmarks/ops.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/limits.py
	$(BIN)/python benchmarks/cifar_load.py
	$(BIN)/python benchmarks/cifar.py --quick --clock cpu
	$(BIN)/python benchmarks/explore.py
	$(BIN)/python benchmarks/ddp.py

# Every GPU measurement in one run (under 10 minutes); fails at once without a GPU.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
