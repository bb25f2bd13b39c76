# ScriptHut developer commands. `make serve` and `make test` are the README's quick start.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test test-fast lint bench setup

# python-ldap (LDAP sign-in) is compiled on install, against the OpenLDAP and SASL headers.
LDAP_HEADERS := /usr/include/ldap.h /usr/include/sasl/sasl.h
$(LDAP_HEADERS):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev libldap-dev libsasl2-dev >/dev/null

$(BIN)/scripthut: pyproject.toml | $(LDAP_HEADERS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -e '.[dev]'
	touch $@

setup: $(BIN)/scripthut

## Set up and start the portal on the embedded default (SQLite, in-process ticker).
## `make serve PORT=8811 HOST=0.0.0.0` picks where it listens.
serve: setup
	$(BIN)/scripthut serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

## Run the whole test suite against the real components it needs (started if missing).
test: setup
	bash tests/setup/services.sh
	bash tests/setup/cluster.sh start
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python manage.py makemigrations --check --dry-run   # every model change has its migration
	$(BIN)/pytest -n 3 --dist loadgroup --durations=25   # cluster tests, and deployments, each on one worker (tests/markers.py); a third for the rest

## The inner loop: every test that needs no service beyond SQLite; nothing is started. The
## markers that leave a test out are registered in pyproject.toml (tests/markers.py checks them).
## One pytest-xdist worker per core: most of these tests wait on subprocesses, not the CPU.
FAST := not (cluster or aws or browser or faults or services or slow)
test-fast: setup
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -q -n auto -m "$(FAST)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest -q tests/test_architecture.py   # no import cycles, complexity <= 15, modules <= 400 lines

## Benchmarks (figures, not pass/fail); DATABASE_URL picks the database.
bench: setup
	bash tests/setup/services.sh
	bash tests/setup/cluster.sh start
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/slurm_bench.py parse
	$(BIN)/python bench/slurm_bench.py submit --n 500
	$(BIN)/python bench/slurm_bench.py chain --links 20 --poll 60 --native on,off
	$(BIN)/python bench/input_bench.py
	$(BIN)/python bench/notify_bench.py
	$(BIN)/python bench/batch_bench.py --n 2000
	$(BIN)/python bench/ecs_bench.py --n 2000
	$(BIN)/python bench/cost_bench.py
	$(BIN)/python bench/fair_share_bench.py
	$(BIN)/python bench/ec2_bench.py --instances 20
	$(BIN)/python bench/live_bench.py page
	$(BIN)/python bench/local_start_bench.py
	$(BIN)/python bench/faults_bench.py embedded
	$(BIN)/python bench/faults_bench.py slurm
	$(BIN)/python bench/faults_bench.py celery
	$(BIN)/python bench/fair_share_bench.py --users 50
	$(BIN)/python bench/local_bench.py --tasks 1000 --slots 4,16
	$(BIN)/python bench/local_load_bench.py --tasks 1000 --slots 16 --clients 0,16
	$(BIN)/python bench/scale_bench.py --sizes 1000,100000
	$(BIN)/python bench/slurm_ends_bench.py --poll 60 --window 180 --markers 5,0
	$(BIN)/python bench/slurm_bench.py chain --links 20 --poll 60 --native off --markers-every 5,1 --watch on,off
