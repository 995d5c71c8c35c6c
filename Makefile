# The few commands a newcomer needs. `make demo` runs the checkout on the embedded stack;
# `make test` runs the linters, the type checker and the whole test suite (what CI runs).
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo emails worker test lint fmt chaos chaos-table bench histories clean

# uv itself is pinned and installed into a private venv, then installs exactly uv.lock.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet
	touch $@

install: $(VENV)/.synced

demo: install
	$(BIN)/python -m demo.stack

# Every customer e-mail (each purpose with templates, de and en) rendered from orders priced by
# the real pricing code, to .data/previews/<name>.<locale>.eml and .html; nothing is sent.
emails: install
	$(BIN)/python -m demo.previews

worker: install
	$(BIN)/python worker.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Two processes (pytest-xdist), a file per process at a time: most tests wait on Temporal and
# the SMTP sink, so two halve the wall time on two cores; files keep their module fixtures.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile

# The tests that kill and restart parts, then the experiments of chaos/run.py (their table).
chaos: install
	$(BIN)/pytest -m chaos
	$(BIN)/python -m chaos.run

# The experiments alone: 200 orders under kills, a Temporal restart and a PostgreSQL outage.
chaos-table: install
	$(BIN)/python -m chaos.run

# The checkout against its floor (five no-op activities), same server, same concurrency;
# 10,000 orders by default (about half an hour on two cores): ORDERS=1000 for a quick look.
ORDERS ?= 10000
bench: install
	$(BIN)/python -m benchmarks.pipeline --orders $(ORDERS)

histories: install
	$(BIN)/python -m tests.record_histories

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(TOOLS) .data .pytest_cache .mypy_cache .ruff_cache
