# `make run` and `make test` are all a fresh machine needs (Python 3.11+).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=
SOAK_ARGS ?=
BENCH_HTTP_ARGS ?=

.PHONY: run test lint fmt bench-ratelimit bench-redis-client bench-list bench-export bench-driver bench-http bench-http-deployed bench-workers bench-batch bench-erasure bench-deletion bench-phone bench-sequence bench-client bench-webhooks soak soak-floor spec clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# One stamp per extra: reinstall only when the dependency list changes.
$(VENV)/.embedded: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.dev: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]'
	touch $@ $(VENV)/.embedded

run: $(VENV)/.embedded
	$(BIN)/pollybot-leads serve

# The whole suite on the default driver (PyMongo's AsyncMongoClient), then the storage
# and HTTP tests again on motor, which stays one setting away (MONGODB_DRIVER=motor).
MOTOR_TESTS ?= tests/api tests/storage
PYTEST_WORKERS ?= 2
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	MONGODB_DRIVER=motor $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS) $(MOTOR_TESTS)

# mypy reads its settings (strict, on pollybot_leads/) from setup.cfg.
lint: $(VENV)/.dev
	$(BIN)/ruff check pollybot_leads tests scripts clients/python
	$(BIN)/ruff format --check pollybot_leads tests scripts clients/python
	$(BIN)/mypy
	$(BIN)/mypy --strict clients/python/src clients/python/examples

fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix pollybot_leads tests scripts clients/python
	$(BIN)/ruff format pollybot_leads tests scripts clients/python

spec: $(VENV)/.dev
	$(BIN)/python scripts/export_spec.py openapi.json

bench-ratelimit: $(VENV)/.dev
	$(BIN)/python scripts/bench_ratelimit.py --out bench-ratelimit.json

# CPU per rate-limit take, client by client (the project's own, redis-py; coredis if installed).
bench-redis-client: $(VENV)/.dev
	$(BIN)/python scripts/bench_redis_client.py --out bench-redis-client.json

bench-list: $(VENV)/.dev
	$(BIN)/python scripts/bench_list.py --out bench-list.json

# Peak server memory exporting 100,000 leads against 10,000 (a few minutes: seeding).
bench-export: $(VENV)/.dev
	$(BIN)/python scripts/bench_export.py --out bench-export.json

bench-driver: $(VENV)/.dev
	$(BIN)/python scripts/bench_driver.py --out bench-driver.json

bench-http: $(VENV)/.dev
	$(BIN)/python scripts/bench_http.py --out bench-http.json $(BENCH_HTTP_ARGS)

# The same with the API as deployed: rate limit in a private Redis, JSON access log at INFO,
# metrics scraped. BENCH_HTTP_ARGS="--rounds 1 --seconds 2" for a quick look.
bench-http-deployed: $(VENV)/.dev
	$(BIN)/python scripts/bench_http.py --deployed --out bench-http-deployed.json $(BENCH_HTTP_ARGS)

# Batches of 100 against 100 single creates, and single creates with an Idempotency-Key.
bench-batch: $(VENV)/.dev
	$(BIN)/python scripts/bench_batch.py --out bench-batch.json

# The same benchmark with the API as `serve --workers 1`, then `--workers 2`.
bench-workers: $(VENV)/.dev
	$(BIN)/python scripts/bench_http.py --workers 1 --rounds 3 --out bench-http-workers-1.json
	$(BIN)/python scripts/bench_http.py --workers 2 --rounds 3 --out bench-http-workers-2.json

# An erasure of 1,000 leads over 3 chatbots, against as many DELETEs (docs/benchmarks.md).
bench-erasure: $(VENV)/.dev
	$(BIN)/python scripts/time_erasure.py --out bench-erasure.json

# Another workspace's GETs and creates while a workspace of 20,000 leads is deleted,
# against the same load just before (a few minutes: seeding).
bench-deletion: $(VENV)/.dev
	$(BIN)/python scripts/bench_deletion.py --out bench-deletion.json

# The Python client's own CPU per call against raw httpx making the same calls.
bench-client: $(VENV)/.dev
	$(BIN)/python scripts/bench_client.py --out bench-client.json

# Creates with a phone against creates without, side by side: CPU per create.
bench-phone: $(VENV)/.dev
	$(BIN)/python scripts/bench_phone.py --out bench-phone.json

# A write's event sequence on a store holding many chatbots: the store's findAndModify
# against the update-then-read it is given instead (store/quirks.py).
bench-sequence: $(VENV)/.dev
	$(BIN)/python scripts/bench_sequence.py --out bench-sequence.json

# Webhook deliveries: per-worker throughput and commit-to-delivery latency.
bench-webhooks: $(VENV)/.dev
	$(BIN)/python scripts/bench_webhooks.py --out bench-webhooks.json

# Sustained mixed load, 32 then 64 clients, 5 minutes each (about 12 minutes in all).
soak: $(VENV)/.dev
	$(BIN)/python scripts/soak.py --clients 32 --seconds 300 --out soak-32.json $(SOAK_ARGS)
	$(BIN)/python scripts/soak.py --clients 64 --seconds 300 --out soak-64.json $(SOAK_ARGS)

# The same two soaks against the floor (scripts/floor_soak.py): the least store work for
# the same mix, a lower bound to put beside `make soak` (docs/load.md, "The floor").
soak-floor: $(VENV)/.dev
	$(BIN)/python scripts/soak.py --floor --clients 32 --seconds 300 --out soak-floor-32.json $(SOAK_ARGS)
	$(BIN)/python scripts/soak.py --floor --clients 64 --seconds 300 --out soak-floor-64.json $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
