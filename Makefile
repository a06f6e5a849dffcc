# The two commands a fresh machine needs (Python 3.11 and make):
#   make demo   create .venv, install funnelbench, run the main job
#   make test   create/update .venv, run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint test-cuda install clean

# constraints.txt pins the tested torch and torchvision; pyproject.toml holds only ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/funnelbench presets
	$(BIN)/funnelbench parse "B6(197, m4096)-6(99)-2(50, m1536)"
	$(BIN)/funnelbench train "B4(17), h96, a3, img32, patch8" --out runs/demo --overwrite
	$(BIN)/funnelbench memory vit-b16 funnel-b6-6 funnel-b4-4-4-max --batch-size 64 --budget 16GiB
	$(BIN)/funnelbench profile deit-ti "B6(197)-6(99), h192" --baseline deit-ti --batch-size 8
	$(BIN)/funnelbench spaces tiny
	$(BIN)/funnelbench search --space tiny --study demo --trials 8 --budget-flops 4M --epochs 3
	$(BIN)/funnelbench report --study demo --top 10

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# ruff (configured in pyproject.toml): lint and the formatter's check, as CI runs them.
lint: $(STAMP)
	$(BIN)/ruff check funnelbench tests benchmarks
	$(BIN)/ruff format --check funnelbench tests benchmarks

# On a machine with a GPU (two for the NCCL test): the CUDA checks the CPU suite cannot make.
test-cuda: $(STAMP)
	$(BIN)/python -m pytest -m cuda -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
