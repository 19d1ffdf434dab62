# Two commands on a fresh machine with Python 3.11+ and make:
#   make up     the clinic behind Envoy (HTTP and HTTPS), deployed blue/green, with demo data
#   make test   ruff, mypy and the whole pytest suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint typecheck pytest bench install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The clinic through Envoy on http://127.0.0.1:8000 and https://127.0.0.1:8443 (self-signed
# certificate under var/), dashboard and admin API (:8001), preview listener (:8002), on one
# embedded PostgreSQL under var/, with demo data.
up: $(STAMP)
	CLINIC_SEED_DEMO=1 $(BIN)/bluegreen up

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/slots.py
	$(BIN)/python bench/booking_race.py
	$(BIN)/python bench/dataplane.py
	$(BIN)/python bench/signalling.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
