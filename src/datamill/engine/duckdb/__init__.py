"""The DuckDB engine, laid out like every engine package: one module per job kind
(imports, workbooks, exports), the run's session, and dispatch (the Engine)."""

from __future__ import annotations

from datamill.engine.duckdb.dispatch import DuckDBEngine

__all__ = ["DuckDBEngine"]
