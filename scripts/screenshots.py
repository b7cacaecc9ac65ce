"""Screenshots of the web UI's main pages, taken in a real browser (run scripts/screenshots).

Starts two demo servers in a temporary home: one with its worker, where the
demo plan runs a few times (files, job and run pages), and one without a
worker, where a plan stays queued (the running-now page has something to show).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.conftest import launch_server, stop_servers  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def sign_in(page: Page, base: str) -> None:
    """Sign in as the demo admin."""
    page.goto(f"{base}/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("admin")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/files")


def run_plan(page: Page, base: str, min_amount: int) -> None:
    """Run the demo plan through the plan page and wait for its end."""
    page.goto(f"{base}/ui/plan")
    page.get_by_label(re.compile("/Data/ImportJobs/orders.imp")).check()
    page.get_by_label("Variables").fill(f"min_amount={min_amount}")
    page.get_by_role("button", name="Run the plan").click()
    expect(page.locator("#plan-state")).to_have_text("The plan has finished.", timeout=60_000)


def main() -> None:
    """Take the screenshots."""
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        busy = launch_server(work / "busy", work / "busy.log", "--demo")
        idle = launch_server(work / "idle", work / "idle.log", "--demo", "--no-worker")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                sign_in(page, busy.base)
                for amount in (100, 250, 400, 50):
                    run_plan(page, busy.base, amount)
                page.goto(f"{busy.base}/ui/files?folder=/Analytics/Workbooks")
                page.screenshot(path=str(OUT / "files.png"))
                page.get_by_role("link", name="order_totals.wbk").click()
                expect(page.locator("svg.chart")).to_be_visible()
                page.screenshot(path=str(OUT / "job.png"), full_page=True)
                page.locator("table.list tbody a").first.click()
                expect(page.get_by_role("heading", name="Lineage")).to_be_visible()
                page.screenshot(path=str(OUT / "run.png"), full_page=True)
                sign_in(page, idle.base)
                run_plan_queued(page, idle.base)
                page.goto(f"{idle.base}/ui/running")
                expect(page.locator("#running-table tbody tr")).to_have_count(2)
                page.screenshot(path=str(OUT / "running.png"))
                phone = browser.new_page(viewport={"width": 390, "height": 844})
                sign_in(phone, busy.base)
                phone.goto(f"{busy.base}/ui/files?folder=/Analytics/Workbooks")
                phone.get_by_role("link", name="order_totals.wbk").click()
                phone.screenshot(path=str(OUT / "job-phone.png"))
                browser.close()
        finally:
            stop_servers([busy, idle])
    print("\n".join(str(p.relative_to(ROOT)) for p in sorted(OUT.glob("*.png"))))


def run_plan_queued(page: Page, base: str) -> None:
    """Start the demo plan on a server without a worker: it stays queued and waiting."""
    page.goto(f"{base}/ui/plan")
    page.get_by_label(re.compile("/Data/ImportJobs/orders.imp")).check()
    page.get_by_role("button", name="Run the plan").click()
    page.wait_for_url(re.compile(r"/ui/plan/runs"))


if __name__ == "__main__":
    main()
