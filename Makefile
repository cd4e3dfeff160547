# Two commands on a fresh machine: `make run` and `make test` (see README "Quick start").
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test install install-dev servers bench bench-load clean fhir-packages compile

# The stamp files make re-installation happen only when pyproject.toml changes. Installs are
# quiet (their output goes to .venv/install.log, shown only when they fail), so the demo's
# banner is what `make run` leaves on screen.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-warn-script-location

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 2; }
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "installing the gateway into $(VENV) (log: $(VENV)/install.log)"
	@$(PIP) -e . >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	@echo "installing the gateway and its test tools into $(VENV) (log: $(VENV)/install.log)"
	@$(PIP) -e '.[dev]' >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Rebuild the compiled X12 hot path after editing one of its modules (gateway/x12/_accelerate.py
# lists them; until then the edited module runs as pure Python, never a stale build).
compile: install-dev
	@$(BIN)/python setup.py -q build_ext --inplace >>$(VENV)/install.log 2>&1 || { tail -20 $(VENV)/install.log; exit 1; }

run: install
	@$(BIN)/ecm-gateway serve --demo --host $(HOST) --port $(PORT)

test: install-dev servers fhir-packages
	$(BIN)/python -m pytest

# FHIR IG packages from the npm registry, unpacked under build/fhir-packages/<name>#<version>/
# (never fetched at run time): the Da Vinci PDex Plan-Net profiles and examples that the
# provider-directory conversions are checked against (gateway/fhir/plannet.py).
PLANNET_PKG := build/fhir-packages/hl7.fhir.us.davinci-pdex-plan-net\#1.2.0
fhir-packages: $(PLANNET_PKG)/package/package.json

$(PLANNET_PKG)/package/package.json:
	@command -v npm >/dev/null 2>&1 || { echo "need npm on PATH for the FHIR IG packages"; exit 2; }
	mkdir -p "$(PLANNET_PKG)"
	cd "$(PLANNET_PKG)" && npm pack --silent hl7.fhir.us.davinci-pdex-plan-net@1.2.0 >/dev/null \
	  && tar xzf hl7.fhir.us.davinci-pdex-plan-net-1.2.0.tgz && rm -f hl7.fhir.us.davinci-pdex-plan-net-1.2.0.tgz
	touch "$@"

# PostgreSQL and redis-server for the scale-out tests, and Debian's chromium for the console's
# browser tests, installed when missing (root or sudo).
servers:
	@.ci/install-servers

bench: install-dev
	$(BIN)/python bench/bench_validate.py

bench-load: install-dev servers
	$(BIN)/python bench/bench_load.py

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts
	find gateway \( -name '*.so' -o -name '*.c' \) -delete  # the compiled X12 hot path
	rm -f gateway/x12/_compiled.json
