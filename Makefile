# Two commands on a fresh machine with Python 3.11+ and make:
#   make up     the clinic behind Envoy (HTTP and HTTPS), deployed blue/green, with demo data
#   make test   ruff, mypy and the whole pytest suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint typecheck pytest bench install lock lock-check clean

# Installs exactly what requirements.lock pins (with hashes), then the project itself.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) .ci/lock.py check
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolves requirements.lock from pyproject.toml (newest versions that fit, keeping the
# locked ones where they still fit; `make lock UPGRADE=name` moves one package to its newest).
# Needs the package index; commit the result.
lock:
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet \
		"$$(grep -Eo '^uv==[^ ]+' requirements.lock 2>/dev/null || echo uv)"
	$(BIN)/python .ci/lock.py write $(BIN)/uv $(if $(UPGRADE),--upgrade-package $(UPGRADE))

# Fails when pyproject.toml changed since requirements.lock was written (offline).
lock-check:
	$(PYTHON) .ci/lock.py check

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

test: lock-check lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/slots.py
	$(BIN)/python bench/booking_race.py
	$(BIN)/python bench/dataplane.py
	$(BIN)/python bench/signalling.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
