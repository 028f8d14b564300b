"""`python -m bench ...` is the `bench` command, for checkouts that are not pip-installed."""

from bench.cli import entry

entry()
