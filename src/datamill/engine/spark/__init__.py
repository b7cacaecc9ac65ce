"""The Spark engine, laid out like engine/duckdb: imports, workbooks and exports,
the run's session (Spark Connect), the local server, and dispatch (the Engine)."""
