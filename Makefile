# vecaudit: `make demo` (install + run the demo) and `make test` (install + whole test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vecaudit-installed
EXTRAS ?= test,postgres,chroma,pgvector,milvus,lancedb,files,ray
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU build lies on disk; a bare `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL (ledger tests) comes from Debian; install it when missing.
system-deps:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian postgresql" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@# Chromium renders the HTML report in tests/report/test_html.py (headless, offline).
	@if ! command -v chromium >/dev/null; then \
		echo "installing Debian chromium" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

demo: install
	$(VENV)/bin/vecaudit demo

# The bit-exactness tests run a second time with another CPU's rounding: OpenBLAS and PyTorch take their AVX2
# kernels and NumPy drops its AVX-512 loops (where the CPU has them), so a test that silently depends on how one
# CPU rounds a norm fails here rather than on someone else's machine.
OTHER_CPU_ENV := OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 \
	$(if $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo y),NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR")
ROUNDING_TESTS := tests/quarantine/test_reopen_exactness.py tests/quarantine/test_store_exactness.py \
	tests/quarantine/test_quarantine_flow.py

test: install system-deps lint
	$(PY) -m pytest -q
	$(OTHER_CPU_ENV) $(PY) -m pytest -q $(ROUNDING_TESTS)

lint: install
	$(VENV)/bin/ruff check auditor connectors detectors tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-store redteam-store demo-store-redteam
