# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-shop

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# --no-compile: Python compiles what it imports, on first import; pip compiling every
# installed file up front took 20 of the install's 54 s.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	touch $(STAMP)

NUDGE := ../$(BIN)/nudge
# Quiet hours (send windows) defer messages at night; the demo delivers "tomorrow at
# 10:00 shop time" so every run shows the whole path from plan to files.
MORNING = $$(TZ=Asia/Shanghai date -d 'tomorrow 10:00' +%Y-%m-%dT%H:%M:%S%:z)
# A week after that, the shoppers have answered and `nudge report` can tell what worked.
WEEK_LATER = $$(TZ=Asia/Shanghai date -d 'tomorrow 10:00 7 days' +%Y-%m-%dT%H:%M:%S%:z)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/nudge init $(DEMO_DIR)
	@echo "== a demo shop: 5,000 shoppers over 180 days, through the ingest path"
	cd $(DEMO_DIR) && $(NUDGE) demo
	@echo "== check every rule and creative"
	cd $(DEMO_DIR) && $(NUDGE) check
	@echo "== rule unit tests"
	cd $(DEMO_DIR) && $(NUDGE) test
	@echo "== dry-run: what a run now would plan (nothing written)"
	cd $(DEMO_DIR) && $(NUDGE) dry-run
	@echo "== one real tick: plan into the outbox"
	cd $(DEMO_DIR) && $(NUDGE) run --once --no-dispatch > /dev/null
	@echo "== deliver through the file backends (outbox/), as of tomorrow 10:00"
	cd $(DEMO_DIR) && $(NUDGE) dispatch --once --at "$(MORNING)"
	cd $(DEMO_DIR) && $(NUDGE) status
	cd $(DEMO_DIR) && $(NUDGE) coupons export --out coupons.csv
	cd $(DEMO_DIR) && $(NUDGE) audiences export lapsed-high-value --format google --out audiences
	cd $(DEMO_DIR) && $(NUDGE) audiences export vip-retargeting --format meta --out audiences
	@echo "== preview one creative on every surface"
	cd $(DEMO_DIR) && $(NUDGE) preview winback --rule winback-lapsed-members --variant bigger-coupon --out previews
	@echo "== a week later: the shoppers answer (purchases through the ingest path, some with the codes)"
	cd $(DEMO_DIR) && $(NUDGE) demo --respond --at "$(WEEK_LATER)"
	@echo "== did it work? each rule against its held-out control group, as of a week later"
	cd $(DEMO_DIR) && $(NUDGE) report --until "$(WEEK_LATER)"
	cd $(DEMO_DIR) && $(NUDGE) report --until "$(WEEK_LATER)" --html report.html
	@echo "== done: see $(DEMO_DIR)/outbox, $(DEMO_DIR)/coupons.csv, $(DEMO_DIR)/audiences, $(DEMO_DIR)/previews, $(DEMO_DIR)/report.html"

# Three xdist workers on the 2-core CI machine: the `slow` tests (tests/conftest.py) come
# first in the order, so one worker spends their ~2 minutes mostly waiting on servers and
# daemons while the other two keep both cores busy (pytest 273 s with -n 2, 234 s with 3).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 3 --dist worksteal -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
