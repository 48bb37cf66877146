# Two commands from a fresh clone: `make demo` and `make test`. Each creates .venv when it is missing.
# TORCH_SPEC picks the torch build; CI sets TORCH_SPEC=torch==2.13.0 to use the CPU wheel kept on its disk.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch
BIN := $(VENV)/bin

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: venv
	mkdir -p out
	$(BIN)/lasagna inspect examples/still-life.psd
	$(BIN)/lasagna flatten examples/still-life.psd -o out/still-life-flat.png
	$(BIN)/lasagna shade examples/still-life.psd --prompt "light from the left" --model builtin -o out/still-life.lasagna.psd
	$(BIN)/lasagna flatten out/still-life.lasagna.psd -o out/still-life-shaded.png
	$(BIN)/lasagna colorize examples/sketch.png -o out/sketch.lasagna.psd
	$(BIN)/lasagna flatten out/sketch.lasagna.psd -o out/sketch-coloured.png
	$(BIN)/lasagna colorize examples/sketch.png --hints examples/sketch-hints.png -o out/sketch-hinted.lasagna.psd
	$(BIN)/lasagna flatten out/sketch-hinted.lasagna.psd -o out/sketch-hinted.png

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
