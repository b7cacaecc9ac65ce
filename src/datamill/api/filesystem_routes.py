"""File system routes (spec §6, §7): folders, files, permissions, with HAL links."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
