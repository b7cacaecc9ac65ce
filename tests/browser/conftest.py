"""A real headless Chromium (Debian's) driven by Playwright against a real `datamill serve`.

Playwright rather than Selenium: its locators wait by themselves for what a
user would wait for (a status changing, a page loading), so the tests need
no sleeps, and it drives the system's Chromium through `executable_path`
without downloading a browser of its own (`playwright install` is never run).

One server (the README's demo workspace) and one browser per module. The
tests skip only where there is no /usr/bin/chromium and CI is not set; in CI
(.ci/run installs chromium) they always run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.acceptance.conftest import Server, launch_server, stop_servers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_PASSWORD = "admin"


def skip_without_chromium() -> None:
    """Skip the calling test module where there is no Chromium, unless under CI."""
    if not CHROMIUM.exists() and not os.environ.get("CI"):
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver); "
            "the browser tests always run under CI=true",
            allow_module_level=True,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`datamill serve --demo`, as the README's first command starts it."""
    folder = tmp_path_factory.mktemp("browser")
    started = launch_server(folder / "home", folder / "server.log", "--demo")
    yield started
    stop_servers([started])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, server: Server) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) pointed at the server."""
    made = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 900})
    made.set_default_timeout(20_000)
    yield made
    made.close()


def sign_in(page: Page, name: str, password: str) -> None:
    """Open the UI, get sent to the sign-in form, fill it in and send it."""
    page.goto("/")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/files")


@pytest.fixture
def admin_page(context: BrowserContext) -> Page:
    """A page signed in as the demo admin."""
    page = context.new_page()
    sign_in(page, "admin", DEMO_PASSWORD)
    return page
