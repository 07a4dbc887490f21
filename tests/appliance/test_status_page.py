"""The status page at the admin listener's ``/``, in a real headless browser (Debian's
chromium driven by Playwright): it loads without a console error, shows each cell's
state and lag, runs a resync from its button to done with the progress shown, and shows
a cell whose publisher stopped as stale. Behind the admin token, the browser logs in with
HTTP Basic authentication (the token as the password).

``STATUS_PAGE_SCREENSHOT=docs/status-page.png`` saves the screenshot used in the docs."""

from __future__ import annotations

import base64
import os
import shutil

import pytest

from tests.appliance.cells import CellsAppliance
from tests.appliance.conftest import get
from tests.conftest import missing_part

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TOKEN = "page-token"
WAIT_MS = 30_000


def _missing(what: str):
    missing_part(f"{what} is missing")


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (requirements-dev.txt)")
    if not shutil.which(CHROMIUM):
        _missing("chromium (Debian package)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def appliance(tmp_path):
    running = CellsAppliance(tmp_path / "cells", servers=300, admin_token=TOKEN)
    try:
        yield running.start()
    finally:
        running.stop()


def open_page(browser, appliance, errors: list):
    context = browser.new_context(http_credentials={"username": "admin", "password": TOKEN},
                                  viewport={"width": 1500, "height": 820})
    page = context.new_page()
    page.on("console", lambda message: message.type == "error"
            and errors.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: errors.append(
        f"request failed: {request.url} {request.failure}"))
    page.on("response", lambda response: response.status >= 400
            and not response.url.endswith("/readyz")
            and errors.append(f"{response.status} {response.url}"))
    page.goto(f"http://127.0.0.1:{appliance.admin_port}/")
    return page


def test_the_page_needs_the_admin_token(appliance):
    status, body, headers = get(appliance.admin_port, "/")
    assert status == 401
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["www-authenticate"].startswith('Basic realm="appliance admin"')
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    status, body, headers = get(appliance.admin_port, "/",
                                headers={"Authorization": f"Basic {basic}"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<title>appliance status</title>" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
        status, _, headers = get(appliance.admin_port, f"/static/{name}",
                                 headers={"X-Auth-Token": TOKEN})
        assert status == 200 and headers["Content-Type"].startswith(kind)
    assert get(appliance.admin_port, "/static/nosuch.js",
               headers={"X-Auth-Token": TOKEN})[0] == 404
    assert get(appliance.admin_port, "/static/status.js")[0] == 401


def test_cells_resync_and_a_stale_cell_in_a_browser(browser, appliance):
    errors: list[str] = []
    page = open_page(browser, appliance, errors)
    for cell in ("cell1", "cell2", "flavors"):
        row = page.locator(f"#cell-{cell}")
        row.locator(".state", has_text="live").wait_for(timeout=WAIT_MS)
        assert row.locator(".lag").inner_text() == "0 ms"
        assert row.locator(".seq").inner_text() == row.locator(".head").inner_text()
    assert page.locator("#cell-cell1 .servers").inner_text() == "300"
    assert page.locator("#cell-flavors .servers").inner_text() == "-"
    assert int(page.locator("#cell-flavors .flavors").inner_text()) > 0
    # These feeds have no key file: the page says so.
    assert page.locator("#cell-cell1 .auth-none").inner_text().strip() == "no key"
    page.locator("#ready", has_text="ready").wait_for(timeout=WAIT_MS)
    # The lag chart fills from the listener's samples.
    page.locator("#cell-cell1 svg.spark polyline").wait_for(state="attached",
                                                            timeout=WAIT_MS)
    roles = page.locator("#processes tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(roles) == ["admin", "ingest", "worker"]

    # A resync from the cell's button: the job shows its progress, then done.
    page.locator("#cell-cell1 button.resync").click()
    job = page.locator("#jobs li").first
    job.wait_for(timeout=WAIT_MS)
    assert job.locator("progress").count() == 1
    assert "resync cell1" in job.inner_text()
    page.locator("#jobs li[data-state=done]").wait_for(timeout=WAIT_MS)
    # every entity of the cell: its servers, instance actions, hypervisors and services
    cell = {c["cell"]: c for c in appliance.status()["cells"]}["cell1"]
    total = sum(cell[label] for label in ("servers", "instance_actions", "hypervisors",
                                          "services"))
    assert total > 300
    assert job.locator(".count").inner_text() == f"{total}/{total}"
    assert job.locator("progress").get_attribute("value") == str(total)
    assert job.locator(".job-state").inner_text().startswith("done in ")
    assert appliance.status()["cells"][0]["resyncs"] >= 1

    # Verify all: done, nothing differing.
    page.locator("#verify-all").click()
    verify = page.locator("#jobs li", has_text="verify")
    verify.and_(page.locator("[data-state=done]")).wait_for(timeout=WAIT_MS)
    assert "cell1: 0 differing, 0 repaired" in verify.inner_text()
    assert "cell2: 0 differing" in verify.inner_text()

    screenshot = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)

    # A publisher stops: the page shows its cell as stale (ingest: nothing heard).
    appliance.stop_publisher("cell2")
    page.locator("#cell-cell2[data-state=stale] .badge.state-stale").wait_for(
        timeout=WAIT_MS)
    assert page.locator("#cell-cell1").get_attribute("data-state") == "live"
    assert errors == [], errors


def test_a_post_from_another_site_is_refused(appliance):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", appliance.admin_port, timeout=10)
    try:
        conn.request("POST", "/resync?cell=cell1", headers={
            "X-Auth-Token": TOKEN, "Origin": "http://evil.example"})
        response = conn.getresponse()
        assert response.status == 403
        assert b"cross-origin" in response.read()
    finally:
        conn.close()
