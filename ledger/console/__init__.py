"""The command groups of `ledger` (one module each) and what they share; `ledger/cli.py`
registers them. Nothing here imports `ledger.cli`."""
