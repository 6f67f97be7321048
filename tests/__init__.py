"""The ledger test suite."""
