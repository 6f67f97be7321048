"""`ledger serve`: the command contract over HTTP (FastAPI on uvicorn); see docs/design.md."""
