# `make train` and `make test` install what they need first (into the active Python environment).
PYTHON ?= python3
# A CPU build of torch is enough for everything here; a bare `torch` requirement would pull a
# multi-GB CUDA build on Linux. Skip this step by installing the torch you want beforehand.
TORCH ?= torch==2.13.0

.PHONY: install train test generate tensorboard clean

# Extras: training needs none; the tests also cover the optional Optuna sweeper and check exports
# against transformers, so `make test` installs the dev and sweep extras.
EXTRAS ?=

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".$(if $(EXTRAS),[$(EXTRAS)])"

train: install
	$(PYTHON) train.py $(ARGS)

test: EXTRAS = dev,sweep
test: install
	$(PYTHON) -m pytest

generate:
	$(PYTHON) generate.py $(ARGS)

tensorboard:
	$(PYTHON) -m tensorboard.main --logdir outputs

clean:
	rm -rf outputs/*/ outputs/.data_cache
