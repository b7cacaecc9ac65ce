"""Datamill: a job server that speaks the Datameer X job REST API."""

from __future__ import annotations

__version__ = "0.1.0"
