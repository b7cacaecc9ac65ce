"""The web UI: server-rendered pages under /ui, for people in a browser (docs/ui.md)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from datamill.ui.auth import FormKeys
from datamill.ui.rendering import HERE


def install_ui(app: FastAPI, session_secret: bytes) -> None:
    """Add the UI's pages, forms and static files (CSS, htmx) to the application."""
    from datamill.ui import actions, pages

    app.state.ui_form_keys = FormKeys(session_secret)
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
