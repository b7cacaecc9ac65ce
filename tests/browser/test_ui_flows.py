"""What a person does in the web UI, in a real browser: the flows of issue 13."""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Page, expect

from datamill.client import Client
from tests.acceptance.conftest import Server
from tests.browser.conftest import DEMO_PASSWORD, sign_in, skip_without_chromium

skip_without_chromium()

FINISHED = re.compile(r"COMPLETED|ERROR|CANCELED")


def job_link(page: Page, folder: str, name: str) -> None:
    """Open a job from the file browser, as a user clicks to it."""
    page.goto(f"/ui/files?folder={folder}")
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)


def test_sign_in_lands_on_the_files(admin_page: Page) -> None:
    page = admin_page
    expect(page.get_by_role("heading", level=1)).to_have_text("/")
    page.get_by_role("link", name="Data/").click()
    page.get_by_role("link", name="ImportJobs/").click()
    row = page.get_by_role("row", name=re.compile("orders.imp"))
    expect(row).to_contain_text("import")
    expect(row).to_contain_text("admin")


def test_a_failing_job_shows_why(admin_page: Page) -> None:
    page = admin_page
    # The export reads the workbook's data, which does not exist before the plan ran.
    job_link(page, "/Data/ExportJobs", "order_totals.exp")
    page.get_by_role("button", name="Trigger").click()
    page.wait_for_url(re.compile(r"/ui/runs/\d+$"))
    expect(page.locator("#run-live .status")).to_have_text("ERROR")
    expect(page.locator("#failure-reason")).to_contain_text("has no data yet")
    expect(page.get_by_role("heading", name="Why it failed")).to_be_visible()


def test_the_demo_plan_runs_step_by_step_and_its_run_shows_the_data(admin_page: Page) -> None:
    page = admin_page
    page.get_by_role("link", name="Plan").click()
    page.get_by_label(re.compile("/Data/ImportJobs/orders.imp")).check()
    page.get_by_label("Variables").fill("min_amount=250")
    page.get_by_role("button", name="Run the plan").click()
    page.wait_for_url(re.compile(r"/ui/plan/runs\?runs="))
    steps = page.locator(".steps li")
    expect(steps).to_have_count(2)  # the import and the data-driven workbook after it
    expect(page.locator("#plan-state")).to_have_text("The plan has finished.", timeout=60_000)
    expect(steps.nth(0)).to_contain_text("COMPLETED")
    expect(steps.nth(1)).to_contain_text("COMPLETED")
    steps.nth(1).get_by_role("link", name=re.compile(r"run \d+")).click()
    expect(page.locator("#run-live .status")).to_have_text("COMPLETED")
    expect(page.get_by_role("heading", name="Lineage")).to_be_visible()
    expect(page.get_by_role("columnheader", name="region")).to_be_visible()
    download = page.get_by_role("link", name=re.compile("as CSV"))
    answer = page.request.get(download.get_attribute("href") or "")
    assert answer.ok and answer.text().startswith('"region","orders","total"')


def test_the_job_page_shows_history_chart_and_graph(admin_page: Page) -> None:
    page = admin_page
    job_link(page, "/Analytics/Workbooks", "order_totals.wbk")
    expect(page.locator("#job-status .status")).to_have_text(FINISHED)
    expect(page.locator("svg.chart rect.bar").first).to_be_visible()
    graph = page.locator("svg.graph")
    expect(graph.get_by_role("link").first).to_be_visible()  # orders upstream, export down
    expect(page.get_by_role("table").first).to_contain_text("SEQUENTIAL by admin")
    expect(page.get_by_label("min_amount (DOUBLE, default 100)")).to_be_visible()
    page.get_by_role("link", name="Running now").click()
    expect(page.get_by_role("heading", name="Running now")).to_be_visible()


def test_a_user_without_rights_sees_neither_the_job_nor_its_buttons(
    server: Server, context: BrowserContext
) -> None:
    with Client(server.base, ("admin", DEMO_PASSWORD)) as admin:
        admin.add_user("eve", "eve-pw-1")
        workbook = admin.file("/Analytics/Workbooks/order_totals.wbk").id
    page = context.new_page()
    sign_in(page, "eve", "eve-pw-1")
    page.goto("/ui/files?folder=/Analytics/Workbooks")
    expect(page.get_by_role("heading", level=1)).to_have_text("/Analytics/Workbooks")
    expect(page.get_by_text("order_totals.wbk")).to_have_count(0)
    page.goto(f"/ui/jobs/{workbook}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("button", name="Trigger")).to_have_count(0)
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)


def test_a_form_without_its_token_is_refused(admin_page: Page) -> None:
    page = admin_page
    job_link(page, "/Data/ImportJobs", "orders.imp")
    runs_before = page.locator("table.list tbody tr").count()
    page.locator('form[action$="/trigger"] input[name="csrf"]').evaluate("e => e.remove()")
    page.get_by_role("button", name="Trigger").click()
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("security token is missing or wrong")
    page.go_back()
    page.reload()
    expect(page.locator("table.list tbody tr")).to_have_count(runs_before)


def test_sign_out_ends_the_session(admin_page: Page) -> None:
    page = admin_page
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/ui/running")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "/ui/sign-in?next=" in page.url
