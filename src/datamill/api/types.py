"""Type aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from datamill.api.security import current_user
from datamill.domain.records import User

MAX_ID = 2**31 - 1
"""Ids are 32-bit in the store; a larger number can name nothing."""

EntityId = Annotated[int, Path(ge=0, le=MAX_ID)]
ConfigurationQuery = Annotated[int, Query(ge=0, le=MAX_ID)]
CurrentUser = Annotated[User, Depends(current_user)]
