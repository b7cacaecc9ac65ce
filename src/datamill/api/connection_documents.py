"""Connections as Datameer's /rest/connections routes write them.

Datameer keeps a connection as `{"file": {...}, "typeId": ..., "properties":
{"key.connectionUrl": [...], "user_name": [...], "password": [...]}}`, every
property a list of strings. These functions translate between that and
Datamill's own document (`{"path", "url", "password"}`), which
services/resources.py reads and writes; permissions and password masking stay
there. What a read answers can be sent back unchanged: the masked password
keeps the stored one.
"""

from __future__ import annotations

import posixpath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from datamill.engine.paths import safe_url
from datamill.errors import InvalidDefinition

CLASS_NAME = "datameer.dap.common.entity.DataBaseConnection"
TYPE_ID = "das.JdbcDataStoreType"
VERSION = "1"
_DATABASE_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def _name(path: str) -> str:
    return posixpath.basename(path).rsplit(".", 1)[0]


def listed(document: dict[str, Any]) -> dict[str, Any]:
    """A list element as Datameer's connection list gives it."""
    return {
        "description": "",
        "id": document["id"],
        "name": _name(document["path"]),
        "path": document["path"],
        "uuid": document["uuid"],
        "owner": document["owner"],
    }


def outgoing(document: dict[str, Any]) -> dict[str, Any]:
    """Datamill's connection document (password already masked) in Datameer's shape."""
    url = sa.make_url(document["url"])
    properties: dict[str, list[str]] = {
        # The user apart from the URL, as Datameer keeps it; the password only as the mask.
        "key.connectionUrl": [url._replace(username=None, password=None).render_as_string(False)],
        "user_name": [url.username or ""],
    }
    if "password" in document:
        properties["password"] = [document["password"]]
    properties["dataStoreUsage"] = ["IMPORT_EXPORT"]
    return {
        "version": VERSION,
        "className": CLASS_NAME,
        "id": document["id"],
        "file": {
            "uuid": document["uuid"],
            "path": document["path"],
            "description": "",
            "name": _name(document["path"]),
        },
        "typeId": TYPE_ID,
        "properties": properties,
        "dbType": {"name": _DATABASE_NAMES.get(url.get_backend_name(), url.get_backend_name())},
        "owner": document["owner"],
    }


def incoming(body: dict[str, Any]) -> dict[str, Any]:
    """Datamill's connection document from a Datameer-shaped body (or Datamill's own)."""
    if "properties" not in body:
        return body  # Datamill's own shape, as /rest/connection takes it
    properties = body["properties"]
    if not isinstance(properties, dict):
        raise InvalidDefinition("properties: must be an object of name: [value]")
    text = _property(properties, "key.connectionUrl")
    if not text:
        raise InvalidDefinition("properties.key.connectionUrl: required, a database URL")
    # A JDBC URL names the same database with a prefix SQLAlchemy does not know.
    text = text.removeprefix("jdbc:")
    try:
        url = sa.make_url(text)
    except (ArgumentError, ValueError):
        raise InvalidDefinition(
            f"properties.key.connectionUrl: {safe_url(text)!r} is not a database URL"
        ) from None
    user = _property(properties, "user_name")
    if user:
        url = url.set(username=user)
    document: dict[str, Any] = {"url": url.render_as_string(hide_password=False)}
    password = _property(properties, "password")
    if password:
        document["password"] = password
    file = body.get("file")
    path = file.get("path") if isinstance(file, dict) else body.get("path")
    if path is not None:
        document["path"] = path
    return document


def _property(properties: dict[str, Any], key: str) -> str | None:
    value = properties.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and not isinstance(value, str):
        raise InvalidDefinition(f"properties.{key}: must be a string or a list of one string")
    return value
