"""Job definition routes (spec §6): import jobs, workbooks, export jobs."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
