# attention-viz developer commands. Every target installs what it needs first,
# so on a fresh clone `make app` and `make test` are all there is to know.

VENV    := .venv
PYTHON  := $(VENV)/bin/python
PORT    ?= 8501
ADDRESS ?= localhost
REPLICAS ?= 2

# Large tensors are allocated with mmap and go back to the system when freed (glibc would keep
# them in its heap): a classroom server's memory returns after a request (attention_viz/settings.py).
export MALLOC_MMAP_THRESHOLD_ ?= 1048576

# Models come from installed packages: never wait on a model hub that cannot be reached.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.DEFAULT_GOAL := help
.PHONY: help setup setup-dev app serve-replicas test lint bench clean distclean

help: ## Show this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-15s %s\n", $$1, $$2}'

setup: ## Create .venv and install the runtime and model packages
	@bash scripts/setup.sh

setup-dev: ## setup, plus test tools and chromium for the browser tests
	@bash scripts/setup.sh --dev

app: setup ## Run the app at http://localhost:8501 (change with PORT=... ADDRESS=...)
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS)

serve-replicas: ## Serve REPLICAS=2 app processes behind HAProxy on PORT (sticky sessions, failover)
	@bash scripts/setup.sh --replicas
	REPLICAS=$(REPLICAS) PORT=$(PORT) ADDRESS=$(ADDRESS) bash scripts/serve_replicas.sh

test: setup-dev ## Lint, then run the whole test suite (browser tests included)
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest

lint: setup-dev ## Run ruff only
	$(VENV)/bin/ruff check .

bench: setup ## Run the benchmarks (writes to benchmarks/out/)
	@bash scripts/setup.sh --replicas
	$(PYTHON) benchmarks/run_all.py

clean: ## Remove caches and test/benchmark outputs (keeps .venv and the converted model)
	rm -rf .pytest_cache .ruff_cache .hypothesis tests/e2e/artifacts benchmarks/out
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## clean, and also remove .venv and the converted-model cache
	rm -rf $(VENV) "$${ATTNVIZ_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/attention-viz}"
