"""Exports for analysts: read-model tables and the event log as Parquet files (pyarrow,
the `parquet` extra), and DuckDB over them (the `analytics` extra)."""
