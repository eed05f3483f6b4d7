# vgcore: `make demo` and `make test` work as the first commands on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vgcore-installed
EXTRAS ?= dev,notebooks,offline,workflow,docs
# TORCH=cpu installs the CPU-only build of the locked torch/torchvision (about 1 GB instead of 6 GB)
TORCH  ?=
PIP_INDEX := $(if $(filter cpu,$(TORCH)),--extra-index-url https://download.pytorch.org/whl/cpu)

JOBS   ?= all
PROFILE ?= smoke
# optional subsets for demo/paper/figures, e.g. make demo LOSSES="triplet scl" SEEDS=0
SELECT := $(if $(DATASETS),--datasets $(DATASETS)) $(if $(LOSSES),--losses $(LOSSES)) $(if $(SEEDS),--seeds $(SEEDS))

.PHONY: help setup hooks test lint demo schedule fair sensitivity paper figures restore sync-notebooks lab site site-notebooks data bench mutate lock repo clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The venv is rebuilt only when pyproject.toml or the lock changes (the stamp records the last install).
# constraints.txt holds the exact versions behind figures/demo; pyproject.toml only compatible ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_INDEX) -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP) hooks  ## create .venv and install vgcore with its dev, notebooks, offline and workflow extras, at the locked versions (TORCH=cpu: CPU-only torch)

# The pre-commit hook refuses a notebook in notebooks/ with outputs or off the conventions (vgcore/notebooks.py).
hooks:  ## use the repository's git hooks (.githooks/pre-commit: the notebook check)
	@if git rev-parse --git-dir >/dev/null 2>&1; then git config core.hooksPath .githooks; fi

test: $(STAMP)  ## unit tests and nbval on the notebooks (smoke profile)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff on the package, tests, benchmarks and notebooks
	$(BIN)/ruff check vgcore tests benchmarks notebooks workflow

demo: $(STAMP) data  ## notebook build, demo profile (FashionMNIST + EfficientNet-Lite0, synthetic fine-grained) -> figures/demo
	$(BIN)/python -m vgcore demo -j $(JOBS) $(SELECT)

schedule: $(STAMP) data  ## notebook build, paper_schedule profile (the paper's lr 1e-4 / 100 epochs on the demo's FashionMNIST) -> figures/paper_schedule
	$(BIN)/python -m vgcore figures --profile paper_schedule -j $(JOBS) $(SELECT)

# The fair comparison (PROTOCOL.md, "Fair comparison"): the equal tuning first (trials under results/fair-tuning/,
# the choice in vgcore/tuned/fair.json), then the notebook build of the tuned profile (about 27 min on 2 cores,
# the tuning in one 1-thread worker process per core: `tune -j`).
fair: $(STAMP) data  ## fair comparison: tune every loss equally, then the notebook build of the fair profile -> figures/fair
	$(BIN)/python -m vgcore tune --profile fair -j $(JOBS) $(if $(DATASETS),--datasets $(DATASETS)) $(if $(LOSSES),--losses $(LOSSES))
	$(BIN)/python -m vgcore figures --profile fair -j $(JOBS) $(SELECT)

# Structure or constants (PROTOCOL.md, "Sensitivity"): each loss's key constant at 5 values of its range, as
# variants of the fair build (which must exist: make fair), every fair verdict judged again.
sensitivity: $(STAMP) data  ## how each fair verdict fares as one loss's constant moves -> figures/sensitivity/fair
	$(BIN)/python -m vgcore sensitivity --profile fair $(if $(DATASETS),--datasets $(DATASETS)) $(if $(LOSSES),--losses $(LOSSES))

paper: $(STAMP)  ## notebook build, paper profile (ViT-B/32, five datasets; needs internet, a GPU helps) -> figures/paper
	$(BIN)/python -m vgcore paper -j $(JOBS) $(SELECT)

figures: $(STAMP)  ## notebook build of any profile: make figures PROFILE=smoke -> figures/<profile>
	$(BIN)/python -m vgcore figures --profile $(PROFILE) -j $(JOBS) $(SELECT)

restore: $(STAMP)  ## put the committed demo runs (figures/demo/results.tar.gz) under results/: the notebooks then run without training
	$(BIN)/python -m vgcore snapshot restore figures/demo/results.tar.gz --results results

sync-notebooks: $(STAMP)  ## sync each notebooks/*.py with its paired .ipynb (the newer one wins)
	$(BIN)/jupytext --sync notebooks/*.py

# JupyterLab serves the whole repository (README, figures/, PROTOCOL.md) and opens on notebooks/.
# jupytext's server extension (enabled by its pip install) pairs each .ipynb with its .py: saving
# either in JupyterLab rewrites both, and a .py opens as a notebook (right-click > Open With).
# The pre-save hook keeps a notebook's committed language_info when only the kernel's Python patch
# release differs, so opening and saving a notebook leaves `git status` clean (tests/test_browser.py).
# As root (containers, Binder-like images, CI) Jupyter refuses to start without --allow-root.
LAB_PORT ?= 8888
LAB_AS_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
lab: $(STAMP)  ## JupyterLab on the notebooks, jupytext pairing on (LAB_PORT=8888)
	$(BIN)/jupyter lab $(LAB_AS_ROOT) --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
	  --ContentsManager.pre_save_hook=vgcore.notebooks.pre_save_hook

# The site is built offline from what is committed: docs/, PROTOCOL.md (one page per section) and the
# executed notebooks of figures/demo/ and docs/notebooks/ (shown as executed, never re-run). Warnings
# are errors, so a broken internal link or a missing figure stops it. Open $(SITE)/index.html.
SITE ?= _site/html
site: $(STAMP)  ## the documentation site, offline, from the committed executed notebooks -> _site/html
	$(BIN)/python -m sphinx -W --keep-going -q -b html -c docs . "$(SITE)"
	printf '<!doctype html><meta http-equiv="refresh" content="0; url=docs/index.html"><a href="docs/index.html">vgcore</a>\n' > "$(SITE)/index.html"

# One executed 01 and 02 of the demo build for the site (docs/notebooks/; tests/test_site.py checks
# that their cells are the current notebooks').
site-notebooks:  ## after `make demo`: copy its executed 01_features and 02_train (FashionMNIST, contrastive, seed 0) to docs/notebooks/
	cp results/demo/fashionmnist/01_features.ipynb results/demo/fashionmnist/contrastive/seed0/02_train.ipynb docs/notebooks/

data:  ## make the offline FashionMNIST available (Debian package dataset-fashion-mnist)
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "FashionMNIST found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }; \
	else \
	  echo "FashionMNIST is not installed. Either run (as root, on Debian/Ubuntu) 'apt-get install dataset-fashion-mnist',"; \
	  echo "or put the four *-ubyte.gz files in data/fashionmnist/, or let vgcore download them (needs internet)."; \
	fi

# `make bench` runs every benchmark; `make bench BENCH=losses` runs benchmarks/bench_losses.py only.
BENCH ?= *
bench: $(STAMP)  ## benchmarks in benchmarks/ (printed, and written to benchmarks/out/); BENCH=losses for one
	@set -e; for b in benchmarks/bench_$(BENCH).py; do echo "== $$b"; $(BIN)/python $$b; done

# Mutation testing of the core (not part of `make test`). mutmut mutates
# the modules of [tool.mutmut] in pyproject.toml in a copy under mutants/ and runs, for each mutant,
# only the selected tests that call the mutated function. It keeps its results in mutants/ and
# retests only what changed; MUTATE_FRESH=1 starts over. One torch thread per worker: a process
# forked after OpenMP ran can hang in the child. Score and survivors: benchmarks/out/mutation_*.
# All of the ~10,000 mutants take many hours on 2 cores: SAMPLE=200 scores a random sample of 200
# (SEED=0), drawn per package in proportion, each package's score with its 95 % interval.
MUTATE_JOBS ?= 2
SEED ?= 0
mutate: $(STAMP)  ## mutation testing of the core (slow; SAMPLE=n scores a random sample) -> benchmarks/out/mutation_*
	$(if $(MUTATE_FRESH),rm -rf mutants)
	$(if $(SAMPLE),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/mutation_sample.py --size $(SAMPLE) --seed $(SEED) --jobs $(MUTATE_JOBS),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATE_JOBS))
	$(BIN)/python benchmarks/mutation_report.py $(if $(SAMPLE),--sample benchmarks/out/mutation_sample.json)

lock: $(STAMP)  ## rewrite constraints.txt from the installed versions (after an upgrade; commit it with the rebuilt figures/demo)
	$(BIN)/python -m vgcore lock --extras dev,notebooks,offline,workflow,cluster,docs > constraints.txt.new && mv constraints.txt.new constraints.txt

# The repository address lives in pyproject.toml ([project.urls]); this rewrites it with every badge and setup cell.
repo: $(STAMP)  ## set the repository address everywhere: make repo URL=https://github.com/<owner>/<name>
	@test -n "$(URL)" || { echo "usage: make repo URL=https://github.com/<owner>/<name>"; exit 2; }
	$(BIN)/python -m vgcore repo "$(URL)"

clean:  ## remove caches, run results and the venv
	rm -rf $(VENV) .pytest_cache .ruff_cache .snakemake cache results artifacts benchmarks/out mutants
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
