"""Commands: pydantic schemas, parsing, and one handler per command."""
