# tailsample: every task starts here. `make help` lists them.
# The two commands of the README: `make demo` (set up, run the main job) and `make test` (set up, run every test).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tailsample-deps
# Where CI keeps pip's cache between runs on one machine (harmless elsewhere).
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help setup build build-demo demo test test-rust lint test-python test-jaeger test-status deploy test-realworld fuzz-ci fuzz soak bench bench-setup bench-results wheel wheel-check docs format clean all

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "maturin>=1.7,<2"
	touch $(STAMP)

setup: $(STAMP) ## create .venv with maturin (dependencies come with the build)

build: setup ## build the Rust extension (release) and install the package, editable, with its test extras
	$(BIN)/maturin develop --release -q -E test

build-demo: setup
	$(BIN)/maturin develop --release -q

demo: build-demo ## the main job on defaults: 30 s of synthetic traffic through the seed policies (installs no test tools)
	$(BIN)/tailsample demo

test-rust: ## cargo test of the core and the OTLP/HTTP server
	cargo test -p tailsample-core -p tailsample-server --quiet

lint: build ## cargo clippy -D warnings, cargo fmt --check, ruff, mypy --strict, stubtest
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo fmt --all --check
	$(BIN)/ruff check python tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest tailsample._native --mypy-config-file pyproject.toml

test-python: build ## pytest (exit 5, nothing collected, is reported and not counted as a failure)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

test-realworld: build ## real OTel instrumentation (Python, Node, Go stacks) → tailsample serve → Jaeger v2, end to end (slow; UPDATE=1 rewrites the fixtures)
	TAILSAMPLE_BUILD_JAEGER=1 TAILSAMPLE_REALWORLD_UPDATE=$(UPDATE) $(BIN)/python -m pytest tests/realworld -m realworld -q; rc=$$?; \
	if [ -n "$(UPDATE)" ]; then $(BIN)/python tests/realworld/emitted.py || rc=1; fi; exit $$rc

test: test-rust lint test-python ## every test: cargo test, clippy, fmt, ruff, mypy, pytest

test-status: build ## build Prometheus into the Go tools cache if needed (many minutes), then the dashboard, alert and status page tests against it and Chromium; rewrites docs/status.png and docs/dashboard.png
	TAILSAMPLE_BUILD_PROMETHEUS=1 TAILSAMPLE_STATUS_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_status_prometheus.py tests/test_status_browser.py

deploy: build ## regenerate deploy/grafana and deploy/prometheus from deploy/generate.py
	$(BIN)/python deploy/generate.py

test-jaeger: build ## build Jaeger v2 into the Go tools cache if needed (~9 min), then the tests that need it (-m jaeger)
	TAILSAMPLE_BUILD_JAEGER=1 $(BIN)/python -m pytest -q -m jaeger

fuzz-ci: ## each cargo-fuzz target 30 s over its committed corpus (installs cargo-fuzz; nightly, or stable with RUSTC_BOOTSTRAP)
	scripts/fuzz.sh ci

fuzz: ## a fuzzing campaign: SECONDS per target (default 1500), merged into the corpus, logged in fuzz/CAMPAIGNS.md
	scripts/fuzz.sh run $${SECONDS_PER_TARGET:-1500}

bench-setup: setup
	$(BIN)/maturin develop --release -q -E test,bench

bench: bench-setup ## benchmarks: the Rust scanner vs prost, and the Python API (pytest-benchmark)
	cargo bench -p tailsample-core --bench decode
	$(BIN)/python -m pytest bench -q --benchmark-only

RESULTS := bench/.data/results
bench-results: bench-setup ## every published figure, side by side with the reference, then bench/RESULTS.md and plots
	mkdir -p $(RESULTS) bench/plots
	$(BIN)/python -m pytest bench -q --benchmark-only --benchmark-json $(RESULTS)/engine.json
	$(BIN)/python bench/peers.py --json $(RESULTS)/peers.json
	$(BIN)/tailsample bench --seconds 20 --rate 300000 --json $(RESULTS)/harness-rate.json
	$(BIN)/tailsample bench --seconds 12 --rate 250000 --decision-wait 60s --json $(RESULTS)/harness-memory.json \
		--memory-json $(RESULTS)/memory.json
	$(BIN)/tailsample bench --seconds 4 --flat-out --json $(RESULTS)/harness-flat.json
	$(BIN)/python bench/services.py --json $(RESULTS)/services.json
	$(BIN)/python bench/service_shapes.py --json $(RESULTS)/services-shapes.json
	$(BIN)/python bench/kafka_throughput.py --spans 600000 --backlog 240000 --json $(RESULTS)/kafka.json
	$(BIN)/python bench/memory_shape.py --traces 40000 --json $(RESULTS)/memory-shape.json
	$(BIN)/python bench/plots.py --benchmark-json $(RESULTS)/engine.json --memory-json $(RESULTS)/memory.json \
		--out-dir bench/plots
	$(BIN)/python bench/report.py --dir $(RESULTS) --out bench/RESULTS.md

soak: bench-setup ## 30 min of tailsample serve at 50k spans/s: RSS, CPU, decision lag every 10 s, verdict (bench/plots/soak.png)
	mkdir -p $(RESULTS) bench/plots
	$(BIN)/python bench/soak.py --minutes $${SOAK_MINUTES:-30} --json $(RESULTS)/soak.json
	$(BIN)/python bench/plots.py --soak-json $(RESULTS)/soak.json --out-dir bench/plots

wheel: setup ## an abi3 manylinux wheel in dist/
	$(BIN)/maturin build --release -o dist

wheel-check: wheel ## install the wheel in a fresh venv and run the command from it
	rm -rf /tmp/tailsample-wheel-venv && $(PYTHON) -m venv /tmp/tailsample-wheel-venv
	ls dist/tailsample-*-abi3-manylinux*.whl
	/tmp/tailsample-wheel-venv/bin/pip install -q dist/tailsample-*-abi3-manylinux*.whl
	/tmp/tailsample-wheel-venv/bin/tailsample check-config python/tailsample/data/seed-config.yaml
	/tmp/tailsample-wheel-venv/bin/tailsample demo --seconds 3
	/tmp/tailsample-wheel-venv/bin/tailsample check-config tests/data/serve-smoke.yaml
	timeout --preserve-status -s TERM 4 /tmp/tailsample-wheel-venv/bin/tailsample serve --config tests/data/serve-smoke.yaml

docs: build-demo ## regenerate the README's configuration and limits tables and docs/reference.md from python/tailsample/collector/reference.py
	$(BIN)/python scripts/gen_reference.py

format: setup ## format Rust and Python
	cargo fmt --all
	$(BIN)/ruff format python tests bench || true
	$(BIN)/ruff check --fix python tests bench || true

clean: ## remove build output and the venv
	rm -rf target dist $(VENV) python/tailsample/_native*.so

all: test bench wheel-check ## everything
