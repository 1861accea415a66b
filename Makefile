# lambdalake: one way to run things. Every target installs what it needs on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash
LL := .venv/bin/lambdalake
PYTEST := .venv/bin/pytest

.PHONY: help setup demo test test-fast lint format up down status bench clean-data

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## Install everything (uv, Python packages, kinesalite, checks); fast when done already
	@bash scripts/setup.sh

demo: setup ## Run the platform end to end on the local profile
	@$(LL) demo

test: ## Run the whole test suite: lint, unit, integration (real local engines), e2e
	@bash scripts/setup.sh --browser
	@$(MAKE) --no-print-directory lint
	@$(PYTEST)

test-fast: setup ## Unit tests only (no services), in seconds
	@$(PYTEST) tests/unit -q

lint: ## ruff: lint and format check; cfn-lint: the AWS templates
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/cfn-lint infra/*.yaml

format: ## ruff: fix what it can and format
	@.venv/bin/ruff check --fix .
	@.venv/bin/ruff format .

up: setup ## Start the local engines (kinesalite, redis-server, PostgreSQL)
	@$(LL) up

down: ## Stop the local engines (data is kept in .lambdalake/)
	@$(LL) down

status: ## Show the local engines
	@$(LL) status

bench: setup ## Run every benchmark in --quick mode
	@for b in $$($(LL) bench --list); do echo "== $$b"; $(LL) bench $$b --quick | tail -n 1; done

clean-data: down ## Delete the local engines' data (the lake, streams, Redis, warehouse)
	@rm -rf .lambdalake/kinesis .lambdalake/redis .lambdalake/warehouse .lambdalake/lake .lambdalake/run
