# Two set-up commands: `make demo` and `make test`. Both create .venv and install when needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned in the SAME pip command as everything else: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-fast browser demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)" -e ".[dev,serve,onnx,ray,catboost]"
	touch $(STAMP)

install: $(STAMP)

# the whole suite (what .ci/run calls), one pytest worker per core: most tests keep one core busy (tiny models,
# subprocess start-ups), so two workers halve the wall time on 2 cores (docs/testing.md)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=15 tests

# the edit loop: every test but those marked slow (docs/testing.md)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup -m "not slow" tests

# the headless-browser check of `bsmfusion explain`'s pages: Debian's Chromium (needs root), then that test
browser: $(STAMP)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y chromium)
	$(PY) -m pytest -q tests/explain/test_page.py

demo: $(STAMP)
	$(VENV)/bin/bsmfusion demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
