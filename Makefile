# One-command workflows. Everything the project needs is installed from its own files.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install tools browser run test test-fast bench chaos lint lock clean

install: $(STAMP)

# Debian's Prometheus and promtool for the monitoring tests, unpacked under .tools/.
PROMTOOL := .tools/prometheus/usr/bin/promtool
tools: $(PROMTOOL)

$(PROMTOOL): deploy/prometheus/install.sh
	bash deploy/prometheus/install.sh .tools/prometheus
	touch $(PROMTOOL)

# The console's browser tests: Debian's Chromium, a Chinese font and axe-core (pinned by npm ci).
browser:
	bash tests/browser/install.sh

# Idempotent: reinstalls only when the lock or the package metadata change.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: install
	$(VENV)/bin/crm up --demo

test: install tools browser
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: install
	$(PY) -m bench

# Fault injection under load (issue 18): CHAOS_DURATION, CHAOS_CLIENTS, CHAOS_FAULTS, or
# ARGS="--duration 300 --faults broker,scorer"; the report is also under .crm/chaos/.
chaos: install
	$(PY) -m chaos $(ARGS)

lint: install
	$(VENV)/bin/ruff check services tests bench chaos
	$(VENV)/bin/ruff format --check services tests bench chaos

# Re-resolve the pinned tree after changing pyproject.toml.
lock:
	rm -rf /tmp/crm-lock-venv && $(PYTHON) -m venv /tmp/crm-lock-venv
	/tmp/crm-lock-venv/bin/pip install --quiet setuptools==65.5.0 wheel==0.45.1 -e ".[dev]"
	(echo "# Full dependency tree, exact pins. Regenerate with: make lock"; \
	 /tmp/crm-lock-venv/bin/pip freeze --all --exclude-editable | grep -v -E "^(pip|crm-platform)==") > requirements.lock

clean:
	rm -rf $(VENV) .crm .tools tests/browser/node_modules
