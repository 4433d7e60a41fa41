# Telemancer: the two set-up commands are `make run` and `make test` (see README.md).
# Both work on a fresh Debian 12 machine; as root they also apt-get what is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_DIR := ./var
# Debian packages the tests and benchmarks need: real SIP peers (baresip, sipp, Kamailio).
DEBIAN_TEST_PACKAGES := python3-venv ca-certificates curl openssl sqlite3 baresip sip-tester kamailio kamailio-tls-modules stunnel4
DEBIAN_RUN_PACKAGES := python3-venv
# Peers only the benchmarks compare with (bench/media.py: rtpengine in userspace);
# not tests, so `make test` never installs them: `make debian-bench` does.
DEBIAN_BENCH_PACKAGES := rtpengine-daemon

.PHONY: run test lint typecheck unit debian-run debian-test debian-bench clean

run: $(STAMP) debian-run
	$(BIN)/telemancer init --dev $(DEV_DIR)
	exec $(BIN)/telemancer --config $(DEV_DIR)/telemancer.toml run

test: debian-test $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The unit suite, the layering contract (tests/test_layering.py) and the
# real-peer suite (tests/integration) all run under pytest.
unit: $(STAMP)
	$(BIN)/python -m pytest -q

$(BIN)/python:
	@$(MAKE) --no-print-directory debian-run
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# apt-get only as root and only for what is missing, so a non-root developer
# with the packages already present is never asked for a password.
debian-run:
	@./.ci/apt-ensure $(DEBIAN_RUN_PACKAGES)

debian-test:
	@./.ci/apt-ensure $(DEBIAN_TEST_PACKAGES)

debian-bench:
	@./.ci/apt-ensure $(DEBIAN_BENCH_PACKAGES)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
