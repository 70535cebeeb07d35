# The two commands of the README are the contract: `make demo` and `make test`.
# Both create their own virtual environment (venv; pip for torch, uv or pip for the rest).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch pinned to the wheels that lie on this machine's disk; override elsewhere.
TORCH_PIP ?= torch==2.14.1 torchvision==0.29.1
# The versions the suite last passed with; `make test CONSTRAINTS=` tries the newest instead.
CONSTRAINTS ?= constraints.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# pip installs torch (the pinned wheels); the rest goes through uv when PyPI offers it, which fetches
# and unpacks in parallel (make test's install: 145 s with pip alone, see docs/testing.md), and through
# plain pip when it does not. `make INSTALLER=pip test` skips uv.
INSTALLER ?= uv
TEST_EXTRAS := -e '.[dev]'
DEMO_EXTRAS := -e '.[clip,service,labelstudio]'
define install_rest
$(if $(filter uv,$(INSTALLER)),$(PY) -m pip install -q uv && $(VENV)/bin/uv pip install -q --python $(PY) $(PIP_C) $(1) || \
	    { echo "uv failed or is missing: installing with pip"; $(PY) -m pip install -q --no-compile $(PIP_C) $(1); },$(PY) -m pip install -q --no-compile $(PIP_C) $(1))
endef
export PYTHONHASHSEED := 0
# Every process of the suite and the demo (servers, workers, commands) imports torch. Where the
# environment sets PYTHONDONTWRITEBYTECODE (this machine's does), no bytecode is ever written, so
# each of them compiled torch's sources anew: `import torch, torchvision` took 8.5 CPU-seconds against
# 3.2 s once the bytecode is written by the first process that imports a module (docs/testing.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv test demo bench serve clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile $(TORCH_PIP)
	$(call install_rest,$(TEST_EXTRAS))
	touch $@

# Only what the demo runs (labeling, the service, the Label Studio export); a venv that `make test`
# built holds it already. --no-compile: byte-compiling all 15,000 files took the install from 62 to
# 111 CPU-seconds (docs/world.md); the first process that imports a module writes its bytecode.
$(VENV)/.installed-demo: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test $(VENV)/.installed -nt pyproject.toml || $(PY) -m pip install -q --no-compile $(TORCH_PIP)
	test $(VENV)/.installed -nt pyproject.toml || { $(call install_rest,$(DEMO_EXTRAS)); }
	touch $@

venv: $(VENV)/.installed

# Two workers, one per core; tests of one file stay on one worker (their module fixtures are built once),
# handed out in the order tests/conftest.py gives them (pytest-xdist would sort the files by their
# number of tests). `make test DURATIONS=0` lists every test's time, not only the slowest 25.
DURATIONS ?= 25
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=$(DURATIONS)

demo: $(VENV)/.installed-demo
	$(PY) -m demo

bench: $(VENV)/.installed
	$(PY) -m bench.run

serve: $(VENV)/.installed
	$(VENV)/bin/neurflow serve

clean:
	rm -rf $(VENV) .cache demo-out
