# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench venv clean

# The first install fetches torch (with its CUDA libraries), transformers, ray, onnxruntime, librosa, timm,
# opensmile...: about 7 GB in .venv, minutes (about 9 on a 2-core machine with nothing cached); pip names each
# package as it goes.
$(BIN)/serkd: pyproject.toml
	@echo "serkd: installing serkd and its dependencies into $(VENV)/ (torch, transformers, ray, onnxruntime,"
	@echo "serkd: librosa, timm, opensmile, ...; about 7 GB): this takes minutes (about 9 with nothing cached)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[dev]' 2>&1 \
		| grep --line-buffered -v -e "is ignored: it is neither" -e "^Requirement already satisfied" || true
	$(BIN)/python -c "import serkd, torch, librosa, timm" && touch $(BIN)/serkd
	@echo "serkd: installed; the serkd command is $(BIN)/serkd"

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
