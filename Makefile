# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench venv clean

$(BIN)/serkd: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import serkd, torch, librosa, timm" && touch $(BIN)/serkd

venv: $(BIN)/serkd

demo: venv
	$(BIN)/python scripts/demo.py --out $(DEMO_OUT)

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_teacher.py
	$(BIN)/python benchmarks/bench_deploy.py
	$(BIN)/python benchmarks/bench_feature_kd.py
	$(BIN)/python benchmarks/bench_grid.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
