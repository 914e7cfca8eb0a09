# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tradesim run

demo: $(STAMP)
	$(BIN)/tradesim replay --input examples/basic.jsonl

lint: $(STAMP)
	$(BIN)/ruff check tradesim tests bench
	$(BIN)/mypy

test: lint
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)  # browser test (tests/ui)
	@command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)  # tests/deploy
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/engine.py --workload mixed
	$(BIN)/python bench/engine.py --workload exchange_core

clean:
	rm -rf $(VENV) build *.egg-info
