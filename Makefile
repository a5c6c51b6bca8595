# The README's two commands: `make train` and `make test`. Each sets up .venv itself, once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-long setup clean

setup: $(STAMP)

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not long" $(ARGS)

# The checks left out of `make test` for its time (end-to-end training of the long_range setting, launchers).
test-long: $(STAMP)
	$(BIN)/python -m pytest -m long $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
