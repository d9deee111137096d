# The README's two commands: `make demo` (set-up + the main job on the built-in default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EDGEKIT := $(VENV)/bin/edgekit
OUT ?= out/quickstart

.PHONY: setup demo test test-heavy bench docs lint clean

setup: $(VENV)/.edgekit-installed

$(VENV)/.edgekit-installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch would pull the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# constraints.txt: the versions CI and the tests were run with (pip alone backtracks for minutes and gives up)
	$(PY) -m pip install -q -e '.[all,dev]' -c constraints.txt
	touch $@

# The main job on the built-in default: recipes/quickstart.yaml (MobileViG-Ti on scikit-learn's bundled digits:
# train, prune, distill, quantize, compile for every target, verify, profile, report) into $(OUT). Nothing is
# downloaded; a second `make demo` finds every step in $(OUT)/cache.
demo: setup
	$(EDGEKIT) run recipes/quickstart.yaml --out $(OUT)

test: setup
	$(PY) -m pytest -q

test-heavy: setup
	$(PY) -m pytest -q -m heavy

bench: setup
	$(PY) bench/runtimes.py | tee bench/runtimes.txt
	$(PY) bench/prune_speedup.py | tee bench/prune_speedup.txt
	$(PY) bench/prune_accuracy.py | tee bench/prune_accuracy.txt
	$(PY) bench/quant.py | tee bench/quant.txt
	$(PY) bench/distill.py | tee bench/distill.txt
	$(PY) bench/predictor.py | tee bench/predictor.txt
	$(PY) bench/recipe_cache.py | tee bench/recipe_cache.txt

# Code health: ruff's lint rules and formatting over every Python file of the repository (edgekit/, bench/, docs/hooks/,
# tests/), mypy over the package, and the import contracts in pyproject.toml (the rooms of DESIGN.md, checked by
# import-linter; tests/test_structure.py checks what the contracts cannot say). Each is configured in pyproject.toml;
# `ruff check --fix` and `ruff format` repair most of what the first two report.
lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# The documentation site (mkdocs.yml, docs/) into site/; the CLI reference page is generated from the typer app on
# every build (docs/hooks/cli_reference.py). --strict: a broken link or a missing page fails the build.
docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf out .pytest_cache site
