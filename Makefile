# The README's commands. Only Python 3.11+ is needed on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint check install demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Development settings for this checkout; the real environment always wins over .env.
.env:
	@printf 'DEBUG=1\nSECRET_KEY=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(40))')" > .env
	@echo "Wrote .env with development settings"

demo: install .env
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py seed_demo

## make run: set up everything, load the demo city and start web + worker + beat.
run: demo
	@echo ""
	@echo "  CivicDesk is starting at  http://127.0.0.1:$(PORT)/"
	@echo "  Dispatch admin:           http://127.0.0.1:$(PORT)/admin/"
	@echo "  Staff logins (password civicdesk-demo): admin, dispatcher, streets, parks, water, crew, director"
	@echo "  Emails are printed by the worker below. Stop with Ctrl-C."
	@echo ""
	PORT=$(PORT) SITE_URL=$${SITE_URL:-http://127.0.0.1:$(PORT)} $(BIN)/honcho start -f Procfile.dev

## make test: the whole test suite (PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set).
test: install .env
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
