"""User management routes (spec §7): users, groups, roles, passwords."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
