# forkpoint: every target creates the environment it needs (`make test` on a fresh clone works).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint format shell demo tour notebook bench clean

install: $(STAMP)

$(STAMP): pyproject.toml tools/get_criu.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,jupyter]'
	$(BIN)/python tools/get_criu.py $(VENV)
	touch $@

test: install
	$(BIN)/python -m pytest

# shell/ is installed as forkpoint.shell; mypy sees that layout through a tree of links.
lint: install
	$(BIN)/ruff format --check forkpoint shell tests bench examples tools
	$(BIN)/ruff check forkpoint shell tests bench examples tools
	rm -rf build/typecheck && mkdir -p build/typecheck/forkpoint
	for f in forkpoint/*; do ln -s ../../../$$f build/typecheck/forkpoint/; done
	ln -s ../../../shell build/typecheck/forkpoint/shell
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p forkpoint

format: install
	$(BIN)/ruff format forkpoint shell tests bench examples tools
	$(BIN)/ruff check --fix forkpoint shell tests bench examples tools

shell: install
	$(BIN)/forkpoint shell

demo: install
	$(BIN)/python examples/demo.py

tour: install
	$(BIN)/python examples/shell_tour.py

notebook: install
	$(BIN)/python -m pip install --quiet 'jupyterlab>=4'
	$(BIN)/forkpoint kernel install --prefix $(VENV)
	$(BIN)/jupyter lab examples/faces.ipynb

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/shell_latency.py --plot docs/shell_latency.png
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/hot_site.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/native.py
	$(BIN)/python bench/cow.py
	$(BIN)/python bench/run_overhead.py
	$(BIN)/python bench/fix_to_result.py
	$(BIN)/python bench/sessions.py
	$(BIN)/python bench/stdlib_overhead.py
	$(BIN)/python bench/resume_classic.py
	$(BIN)/python bench/kernel.py
	$(BIN)/python bench/cell_cost.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
