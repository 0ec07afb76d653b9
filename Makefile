# The two commands a newcomer needs: `make run` (the whole HA stack on this machine: the Google
# emulators, the Cloud Scheduler emulator, two worker replicas, examples/schedules.yaml) and
# `make test`. Both create .venv and install the project on first use. `make local` runs the same
# schedules on the single-instance fallback instead (in-process clock, SQLite, no cloud at all).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint run local bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

test: install
	@# pytest exits 5 when it collected no tests: that must fail, not pass quietly. Four xdist
	@# workers, handed one test at a time, the slow ones first (a module fixture is set up once
	@# per worker that runs the module): the end-to-end tests wait on the wall clock (cron slots,
	@# leases), so they overlap the CPU-bound ones on two cores. On a clean clone: three workers
	@# 613 s, four 519-562 s, six 443-489 s, but with six the Pub/Sub emulator's known delivery
	@# defects (the tests' xfail) showed in 3 of 5 runs, against none in four-worker runs.
	@# `--dist loadfile` ran the files with fewest tests, the longest waits, last and one after
	@# another on one worker.
	$(BIN)/pytest -n 4 --dist loadgroup; status=$$?; if [ $$status -eq 5 ]; then echo 'pytest collected no tests'; exit 1; fi; exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	terraform fmt -check -recursive terraform

run: install
	$(BIN)/scion-scheduler up --file examples/schedules.yaml

local: install
	@# The examples call the reference hub on loopback, which the egress policy refuses unless named.
	$(BIN)/scion-scheduler --allowed-targets '*,http://127.0.0.1:8087/' local \
		--file examples/schedules.yaml

bench: install
	$(BIN)/python bench/bench_sync.py
	$(BIN)/python bench/bench_claim.py
	$(BIN)/python bench/bench_worker.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
