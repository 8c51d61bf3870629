# EduRise Queue. `make run` starts the whole system on the embedded default (SQLite ledger,
# SqliteHuey transport under ./var); `make test` runs the test suite (needs PostgreSQL + Redis).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv (pinned) generates and exports the lock; pip installs from it with hashes.
UV_VERSION := 0.13.9
UV := $(BIN)/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
PIP := $(BIN)/pip --quiet --disable-pip-version-check

.PHONY: install lock run test lint format clean

# The development/test environment: core + console + dev extras, exactly as uv.lock pins them
# (hash-checked), then the project itself (editable, no dependency resolution).
$(STAMP): uv.lock pyproject.toml | $(UV_STAMP)
	$(UV) export --quiet --locked --no-emit-project --extra console --extra dev \
		-o $(VENV)/requirements.lock.txt
	$(PIP) install --require-hashes -r $(VENV)/requirements.lock.txt
	$(PIP) install --no-deps -e .
	touch $(STAMP)

$(UV_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install uv==$(UV_VERSION)
	touch $(UV_STAMP)

# Regenerate uv.lock from pyproject.toml (keeps locked versions that still fit the ranges);
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest versions the ranges allow.
lock: | $(UV_STAMP)
	$(UV) lock $(LOCK_ARGS)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/queuectl up

# worksteal: an idle worker takes tests queued on the other (the default `load` gave the first
# worker the first 128 tests, the slow end-to-end ones, to run alone: 8:07 -> 6:26)
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
