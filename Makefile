# Task runner. `make` lists the targets; `make test` is the README's test command and what CI runs.
.DEFAULT_GOAL := help
CARGO ?= cargo

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

test: lint ## Format check, clippy, and the whole test suite
	$(CARGO) test --all-targets --no-fail-fast

lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

generate: ## Regenerate committed artefacts (CRDs, golden files)
	UPDATE_GOLDEN=1 $(CARGO) test --all-targets golden
	UPDATE_CRDS=1 $(CARGO) test --all-targets crd

chart: ## Lint and render the Helm chart, validate manifests against Kubernetes schemas, check RBAC
	python3 -m venv target/chart-venv
	target/chart-venv/bin/pip install -q -r ci/requirements.txt
	target/chart-venv/bin/python ci/chart_check.py

bench: ## Run the benchmarks (print their figures)
	$(CARGO) bench

simulator: ## Run the Azure simulator on 127.0.0.1:8787
	$(CARGO) run --release -- simulator --listen 127.0.0.1:8787

.PHONY: help test lint chart generate bench simulator
