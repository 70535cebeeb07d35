# The two commands of the README are the contract: `make demo` and `make test`.
# Both create their own virtual environment with plain venv + pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch pinned to the wheels that lie on this machine's disk; override elsewhere.
TORCH_PIP ?= torch==2.14.1 torchvision==0.29.1
# The versions the suite last passed with; `make test CONSTRAINTS=` tries the newest instead.
CONSTRAINTS ?= constraints.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
export PYTHONHASHSEED := 0

.PHONY: venv test demo bench serve clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP)
	$(PY) -m pip install -q $(PIP_C) -e '.[dev]'
	touch $@

# Only what the demo runs (labeling, the service, the Label Studio export); a venv that `make test`
# built holds it already. --no-compile: byte-compiling all 15,000 files took the install from 62 to
# 111 CPU-seconds (docs/world.md); Python compiles the modules the demo imports on first use.
$(VENV)/.installed-demo: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test $(VENV)/.installed -nt pyproject.toml || \
	    $(PY) -m pip install -q --no-compile $(PIP_C) $(TORCH_PIP) -e '.[clip,service,labelstudio]'
	touch $@

venv: $(VENV)/.installed

# Two workers, one per core; tests of one file stay on one worker (their module fixtures are built once).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

demo: $(VENV)/.installed-demo
	$(PY) -m demo

bench: $(VENV)/.installed
	$(PY) -m bench.run

serve: $(VENV)/.installed
	$(VENV)/bin/neurflow serve

clean:
	rm -rf $(VENV) .cache demo-out
