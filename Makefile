# The README's commands: `make run` and `make test`. Everything they need, they install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install run test test-unit model clean

install: $(STAMP)
	@tools/system-deps.sh

# The venv is (re)built when pyproject.toml changes. torch goes first, pinned: a bare `torch`
# requirement in a fresh venv would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[test,train]'
	@touch $(STAMP)

# Rebuild the bundled model from scratch (corpus conversion, fit, online blend, stored baselines)
# into model/weights/. About 40 minutes on a 2-core CPU; see model/MODEL.md.
model: install
	$(BIN)/python -m ripieno.training.bundle

run: install
	@tools/run.sh

test: install
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

clean:
	rm -rf $(VENV) build *.egg-info
