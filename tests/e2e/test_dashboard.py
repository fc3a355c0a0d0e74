"""The dashboard at `/` in a real headless Chromium (Debian's `chromium`, driven by Playwright for Python),
against the real `payrun api`, `payrun dispatcher` and `payrun sim` processes: log in with an employer's key,
click Run (and confirm), watch the progress bar reach "Completed" without reloading the page; the list follows
payrolls run through the API; a 10,000-item payroll opens a page of items, not all of them; 800 px wide.

Skipped, saying why, where /usr/bin/chromium or Playwright is missing; CI installs both."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None

CHROMIUM = Path(os.environ.get("PAYRUN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(
        async_playwright is None,
        reason="Playwright for Python is not installed (pip install playwright; no `playwright install`)",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    ),
]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A fresh page in a headless Chromium; fails the test on a Content-Security-Policy violation."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            tab = await context.new_page()
            tab.set_default_timeout(15_000)
            refused: list[str] = []
            tab.on(
                "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
            )
            tab.on("pageerror", lambda e: refused.append(f"script error: {e}"))
            yield tab
            assert not refused, refused
        finally:
            await browser.close()


def accounts(n: int) -> list[str]:
    return [f"25479900{i:04d}" for i in range(n)]


async def log_in(page: Page, api: str, key: str) -> None:
    await page.goto(f"{api}/")
    await page.fill("#api-key", key)
    await page.click("#login-button")


async def test_the_page_is_open_asks_for_a_key_and_shows_a_wrong_one_as_an_error(
    make_stack, page: Page, tmp_path: Path
) -> None:
    stack, client = await make_stack(dispatchers=0)
    # The page's own files: open, typed, cacheable by ETag; no other name is served.
    for name, kind in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]:
        async with client.session.get(f"{stack.api}/dashboard/{name}") as resp:
            assert resp.status == 200 and resp.content_type == kind
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            etag = resp.headers["ETag"]
        async with client.session.get(
            f"{stack.api}/dashboard/{name}", headers={"If-None-Match": etag}
        ) as resp:
            assert resp.status == 304
    for path in ["/dashboard/index.html", "/dashboard/..%2Fapp.py", "/dashboard/"]:
        async with client.session.get(f"{stack.api}{path}") as resp:
            assert resp.status == 404 and resp.content_type == "application/problem+json", path

    response = await page.goto(f"{stack.api}/")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#api-key")).to_be_visible()
    await expect(page.locator("#payrolls")).to_be_hidden()
    await expect(page.locator("#error")).to_be_hidden()

    await page.fill("#api-key", "pr_not_a_key_anyone_has")
    await page.click("#login-button")
    error = page.locator("#error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("Unauthenticated (401)")
    await expect(error).to_contain_text("the API key is not valid")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#payrolls")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('payrun.apiKey')") is None
    await page.screenshot(path=tmp_path / "dashboard-wrong-key.png", full_page=True)


async def test_run_a_payroll_and_watch_the_bar_reach_completed(
    make_stack, page: Page, tmp_path: Path
) -> None:
    # One item per batch and a slow provider, so the bar has steps to take and the page polls a while.
    stack, client = await make_stack(
        dispatchers=1, INTASEND_BATCH_SIZE="1", INTASEND_MAX_RPS="2", SIM_FAIL_ACCOUNTS="254799000901"
    )
    key = client.headers["Authorization"].removeprefix("Bearer ")
    # An older payroll, run through the API before the page opens: one worker paid, one failed.
    failed_id = await client.create("DASH-2026-10", ["254799000900", "254799000901"])
    assert await client.process(failed_id) == 202
    assert await client.wait_final([failed_id], within_s=60) == {failed_id: "PARTIALLY_FAILED"}
    payroll_id = await client.create("DASH-2026-11", accounts(5), amount="1500.00")
    # A second, newer draft whose data looks like markup: the page must show it as text.
    hostile = {"reference": "<b>bold</b> & co", "currency": "KES", "items": [
        {"name": "<img src=x onerror=alert(1)>", "account": "0799000999", "amount": "100.00"}]}  # fmt: skip
    async with client.session.post(f"{stack.api}/payrolls", json=hostile, headers=client.headers) as resp:
        assert resp.status == 201, await resp.text()
        hostile_id = (await resp.json())["id"]

    polls: list[dict[str, Any]] = []

    async def on_response(response: Any) -> None:
        if response.url.endswith(f"/payrolls/{payroll_id}/status"):
            polls.append({
                "status": response.status,
                "if_none_match": await response.request.header_value("if-none-match"),
                "etag": await response.header_value("etag"),
            })  # fmt: skip

    page.on("response", on_response)
    await log_in(page, stack.api, key)
    await expect(page.locator("#payrolls")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('payrun.apiKey')") == key

    rows = page.locator("tr.payroll")
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_have_attribute("data-payroll-id", hostile_id)  # newest first
    await expect(rows.first.locator("button.toggle")).to_have_text("<b>bold</b> & co")
    assert await rows.first.locator("b").count() == 0

    older = page.locator(f'tr.payroll[data-payroll-id="{failed_id}"]')
    await expect(older.locator(".status")).to_have_text("Partially failed")
    await expect(older.locator(".progress-text")).to_have_text("1 paid · 1 not paid of 2 (100%)")
    await expect(older.locator("button.retry")).to_be_visible()
    await expect(older.locator("button.csv")).to_be_visible()
    await expect(older.locator("button.run")).to_be_hidden()
    await older.locator("button.toggle").click()
    failed_item = page.locator(f'tr.detail[data-payroll-id="{failed_id}"] tr.item[data-status="FAILED"]')
    await expect(failed_item.locator(".status")).to_have_text("Failed")
    await expect(failed_item.locator("td.reason")).not_to_be_empty()

    row = page.locator(f'tr.payroll[data-payroll-id="{payroll_id}"]')
    status, bar = row.locator(".status"), row.locator("progress")
    await expect(status).to_have_text("Draft")
    await expect(row.locator(".progress-text")).to_have_text("0 paid · 0 not paid of 5 (0%)")
    await expect(row).to_contain_text("KES 7,500.00")
    await row.locator("button.toggle").click()
    detail = page.locator(f'tr.detail[data-payroll-id="{payroll_id}"]')
    await expect(detail.locator("tr.item")).to_have_count(5)
    await expect(detail.locator("tr.item .status").first).to_have_text("Pending")

    await page.evaluate("window.__notReloaded = true")
    asked: list[str] = []

    async def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    async with page.expect_request(f"**/payrolls/{payroll_id}/process") as run_request:
        await row.locator("button.run").click()
    sent = await (await run_request.value).all_headers()
    assert len(sent["idempotency-key"]) == 36 and sent["authorization"] == f"Bearer {key}"
    assert (await (await run_request.value).response()).status == 202
    await expect(row.locator("button.run")).to_be_hidden()
    assert len(asked) == 1 and "Pay 5 workers KES 7,500.00 in all (DASH-2026-11)" in asked[0], asked

    seen: list[str] = []  # the bar's values as it moves, sampled until the label says Completed
    for _ in range(600):
        value = await bar.get_attribute("value") or ""
        if not seen or seen[-1] != value:
            seen.append(value)
            if value not in ("0", "5"):  # the bar part-way
                await page.screenshot(path=tmp_path / "dashboard-processing.png", full_page=True)
        if await status.text_content() == "Completed":
            break
        await page.wait_for_timeout(100)
    await expect(status).to_have_text("Completed", timeout=60_000)
    await expect(bar).to_have_attribute("value", "5")
    await expect(row.locator(".progress-text")).to_have_text("5 paid · 0 not paid of 5 (100%)")
    await expect(row.locator("td.paid")).to_have_text("KES 7,500.00")  # paid now, as well as the total
    assert await page.evaluate("window.__notReloaded === true"), "the page reloaded"
    await expect(detail.locator("tr.item .status")).to_have_text(["Paid"] * 5)

    # The polls: the first without a validator, each later one with the ETag of the last 200.
    assert polls and polls[0]["if_none_match"] is None
    last_etag = None
    for poll in polls:
        assert poll["if_none_match"] == last_etag, polls
        assert poll["status"] in (200, 304)
        last_etag = poll["etag"] or last_etag
    polls_after = len(polls)
    await page.wait_for_timeout(3_000)
    assert len(polls) == polls_after, "the page kept polling a finished payroll"

    await page.locator(f'tr.payroll[data-payroll-id="{hostile_id}"] button.toggle').click()
    name = page.locator(f'tr.detail[data-payroll-id="{hostile_id}"] tr.item td').first
    await expect(name).to_have_text("<img src=x onerror=alert(1)>")
    assert await page.locator("tr.detail img").count() == 0

    await page.screenshot(path=screenshots(tmp_path) / "dashboard.png", full_page=True)
    print(
        f"dashboard screenshot: {screenshots(tmp_path) / 'dashboard.png'}; bar values seen: {seen}; polls: {polls}"
    )


def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: tmp_path, or $PAYRUN_SCREENSHOTS (docs/img, to refresh the docs' pictures)."""
    return Path(os.environ.get("PAYRUN_SCREENSHOTS") or tmp_path)


async def test_the_list_follows_payrolls_run_through_the_api_without_a_reload(
    make_stack, page: Page, tmp_path: Path
) -> None:
    stack, client = await make_stack(dispatchers=1, SIM_UNDETERMINED_ACCOUNTS="254799000402")
    key = client.headers["Authorization"].removeprefix("Bearer ")
    lists: list[int] = []
    page.on("response", lambda r: lists.append(r.status) if "/payrolls?limit=" in r.url else None)
    await log_in(page, stack.api, key)
    await expect(page.locator("#empty")).to_be_visible()
    await page.evaluate("window.__notReloaded = true")

    # Created and run through the API, not on the page: the page shows it, then its end, by itself.
    payroll_id = await client.create("API-2026-11", ["254799000401", "254799000402"], amount="1250.00")
    row = page.locator(f'tr.payroll[data-payroll-id="{payroll_id}"]')
    await expect(row.locator(".status")).to_have_text("Draft", timeout=20_000)
    assert await client.process(payroll_id) == 202
    await expect(row.locator(".status")).to_have_text("Needs review", timeout=60_000)
    await expect(row.locator("button.run")).to_be_hidden()
    # NEEDS_REVIEW is not progress: one paid, one unsettled.
    await expect(row.locator(".progress-text")).to_have_text("1 paid · 0 not paid of 2 (50%) · 1 need review")
    await row.locator("button.toggle").click()
    review = page.locator(f'tr.detail[data-payroll-id="{payroll_id}"] tr.item[data-status="NEEDS_REVIEW"]')
    await expect(review.locator(".refs")).to_contain_text("tracking id ")
    refs = await review.locator(".refs").text_content() or ""
    assert "—" not in refs, refs  # both the tracking id and the request reference are there
    assert await page.evaluate("window.__notReloaded === true"), "the page reloaded"
    # Refreshing costs a 304 while nothing changes.
    before = len(lists)
    await page.wait_for_timeout(11_000)
    assert lists[before:] and set(lists[before:]) == {304}, lists


async def test_a_10000_item_payroll_opens_a_page_of_items_at_800_px(
    make_stack, page: Page, tmp_path: Path
) -> None:
    stack, client = await make_stack(dispatchers=0)
    key = client.headers["Authorization"].removeprefix("Bearer ")
    payroll_id = await client.create("BIG-2026-11", [f"2547{n:08d}" for n in range(10_000)])
    await page.set_viewport_size({"width": 800, "height": 900})
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if f"/payrolls/{payroll_id}" in r.url else None)
    await log_in(page, stack.api, key)
    row = page.locator(f'tr.payroll[data-payroll-id="{payroll_id}"]')
    await expect(row).to_contain_text("KES 1,000,000.00")

    started = await page.evaluate("performance.now()")
    await row.locator("button.toggle").click()
    items = page.locator(f'tr.detail[data-payroll-id="{payroll_id}"] tr.item')
    await expect(items).to_have_count(100)
    opened_ms = await page.evaluate("performance.now()") - started
    assert opened_ms < 2_000, opened_ms
    assert not any(u.endswith(f"/payrolls/{payroll_id}") for u in fetched), fetched  # never the whole detail
    assert any(f"/payrolls/{payroll_id}/items?limit=100" in u for u in fetched), fetched
    await page.locator(f'tr.detail[data-payroll-id="{payroll_id}"] button.more-items').click()
    await expect(items).to_have_count(200)

    # Nothing is clipped at 800 px: the payroll table fits its section.
    fits = await page.evaluate(
        "(() => { const s = document.getElementById('payrolls'); return s.scrollWidth <= s.clientWidth; })()"
    )
    assert fits, "the payroll table is wider than its section at 800 px"

    # Run asks first, with the workers and the total; dismissed, nothing is sent.
    asked: list[str] = []

    async def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    await row.locator("button.run").click()
    await page.wait_for_timeout(500)
    assert asked and "Pay 10,000 workers KES 1,000,000.00 in all (BIG-2026-11)" in asked[0], asked
    assert not any(u.endswith("/process") for u in fetched), fetched
    await expect(row.locator(".status")).to_have_text("Draft")
    await page.screenshot(path=screenshots(tmp_path) / "dashboard-800px.png")
