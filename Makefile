# patchcfg — every target installs what it needs from nothing (a fresh clone and python3 >= 3.11).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXPERIMENTS ?= experiments

.PHONY: install demo test test-fast docs bench lint clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs,foundation,ray,index]'
	@touch $(STAMP)

demo: install
	$(BIN)/patchcfg demo --out data/demo
	$(BIN)/patchcfg validate configs/*.yaml
	$(BIN)/patchcfg run configs/demo.yaml --experiments $(EXPERIMENTS)
	$(BIN)/patchcfg embed configs/demo.yaml --experiments $(EXPERIMENTS)
	$(BIN)/patchcfg analyze $(EXPERIMENTS) --metric val_macro_auc --metric probe_macro_auc
	@echo
	@echo "Done: on the demo digits, SimCLR pretraining -> a two-stage classifier -> what to label next -> a distilled student."
	@echo "  $(EXPERIMENTS)/digits-demo/pretrain/   encoder.keras; metrics.csv has the linear probe per epoch"
	@echo "  $(EXPERIMENTS)/digits-demo/finetune/   fold_0/model.keras, predictions.csv, summary.json, roc_fold_0.png"
	@echo "  $(EXPERIMENTS)/digits-demo/query/queue.csv   the 50 images to label next (entropy + 20% random)"
	@echo "  $(EXPERIMENTS)/digits-demo/distill/    the student model.keras; summary.json compares it with the teacher"
	@echo "  $(BIN)/patchcfg label configs/demo.yaml --experiments $(EXPERIMENTS)   label the demo in the browser (keys, ranked queue, grid, undo)"
	@echo "  $(BIN)/tensorboard --logdir $(EXPERIMENTS)   curves, augmented views, hparams"
	@echo "  $(BIN)/patchcfg predict $(EXPERIMENTS)/digits-demo data/demo/images --out preds.csv --tta flips"

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadfile

# The documentation site, offline: a broken link or anchor, or a page left out of the nav, fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# Every benchmark runs, one JSON line per measurement; the status is non-zero when any missed its goal.
bench: install
	@missed=""; for script in benchmarks/*.py; do $(BIN)/python $$script || missed="$$missed $$script"; done; \
	if [ -n "$$missed" ]; then echo "goals missed in:$$missed" >&2; exit 1; fi

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
