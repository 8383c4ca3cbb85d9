# `make demo` and `make test` work from a fresh clone: they create .venv and install the package first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real Argoverse 1.1 sample used by tests (never copied into the project).
export ARGOVERSE1_SHARED ?= $(abspath ../shared/data/argoverse1)

.PHONY: install demo real ablation test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,tensorboard,onnx]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) bin/demo.py

# Real traffic (README "Real traffic"): extracts ../shared/data/argoverse1_more once into data/, packs, runs the
# four stages and the deployment checks on real data.
real: $(STAMP)
	$(PY) bin/real.py

# The README's real-traffic ablation: trains the variants' missing stages (runs/real_{hat,dense,lane}), then the
# table on val and val_large (runs/ablation_real.json).
ablation: $(STAMP)
	$(PY) bin/ablation_real.py --train

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf data/synthetic_city data/synthetic_lmdb runs/demo
