"""Optional dependencies: which extra installs a module, and the one-line error if it is
missing (pyarrow and DuckDB are tens of megabytes that the write side never needs)."""

from __future__ import annotations

import importlib.util

EXTRAS = {"pyarrow": "parquet", "duckdb": "analytics"}


class ExtraMissing(RuntimeError):
    """An optional dependency is not installed; the message says how to install it."""


def need(module: str, what: str) -> None:
    """Raise `ExtraMissing` naming the extra to install if `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS[module]
        raise ExtraMissing(f"{what} needs {module}, which is not installed: "
                           f"pip install 'ledger[{extra}]'")
