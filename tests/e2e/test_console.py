"""The operator console at `/ops` in Debian's Chromium (as tests/e2e/test_dashboard.py), against the real
processes: an operator finds another employer's NEEDS_REVIEW item by phone number and resolves it as the
simulator's ledger says it went; a dead outbox row shows its last error.

Screenshots go to tmp_path, or to $PAYRUN_SCREENSHOTS (docs/img: `PAYRUN_SCREENSHOTS=docs/img make test`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

pytest.importorskip("playwright", reason="Playwright for Python is not installed")
from playwright.async_api import Page, expect  # noqa: E402

from tests.e2e import test_dashboard as browser
from tests.e2e.conftest import ROOT, assert_ledger_agrees
from tests.e2e.stack import sim_json

page = browser.page  # the fixture: a fresh page in Debian's Chromium, failing on a CSP violation
pytestmark = browser.pytestmark  # skipped, saying why, without Chromium or Playwright


def screenshots(tmp_path: Path) -> Path:
    return Path(os.environ.get("PAYRUN_SCREENSHOTS") or tmp_path)


async def payrun(stack: Any, *args: str) -> dict[str, Any]:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "payrun", *args], cwd=ROOT, env=stack.env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    created: dict[str, Any] = json.loads(done.stdout)
    return created


async def log_in(page: Page, api: str, key: str) -> None:
    await page.goto(f"{api}/ops")
    await page.fill("#operator-key", key)
    await page.click("#login-button")


async def test_the_operator_finds_a_review_item_by_phone_and_resolves_it(
    make_stack, page: Page, tmp_path: Path
) -> None:
    undetermined = "254799000102"
    stack, client = await make_stack(dispatchers=1, SIM_UNDETERMINED_ACCOUNTS=undetermined)
    # Another employer's paid payroll, so the console shows more than one employer.
    other = await payrun(stack, "employer", "create", "--name", "Other Ltd")
    other_headers = {"Authorization": f"Bearer {other['api_key']}"}
    body = {"reference": "OTHER-11", "currency": "KES",
            "items": [{"name": "Otieno", "account": "254799000200", "amount": "2500.00"}]}  # fmt: skip
    async with client.session.post(f"{stack.api}/payrolls", json=body, headers=other_headers) as resp:
        other_id = (await resp.json())["id"]
    async with client.session.post(f"{stack.api}/payrolls/{other_id}/process", headers=other_headers) as resp:
        assert resp.status == 202
    payroll_id = await client.create("E2E-2026-11", ["254799000101", undetermined, "254799000103"], "1500.00")
    assert await client.process(payroll_id) == 202
    assert await client.wait_final([payroll_id], within_s=60) == {payroll_id: "NEEDS_REVIEW"}
    operator = await payrun(stack, "operator", "create", "--name", "jane.oncall")

    # An employer's key does not open the console.
    await log_in(page, stack.api, client.headers["Authorization"].removeprefix("Bearer "))
    await expect(page.locator("#error")).to_contain_text("(401)")
    await expect(page.locator("#console")).to_be_hidden()

    await log_in(page, stack.api, operator["api_key"])
    await expect(page.locator("#console")).to_be_visible()
    await expect(page.locator("#cards")).to_contain_text("items need review")
    await expect(page.locator("#rate")).to_contain_text("Rate limit")
    assert await page.locator("#chart-throughput svg rect").count() > 0  # the finished items, as bars
    await expect(page.locator("#employer option")).to_have_count(3)  # every employer, and "every employer"

    # Found by the phone number as a worker would say it (07…), among every employer's items.
    await page.select_option("#item-status", "")
    await page.fill("#search", "0799000102")
    await page.click("#search-form button[type=submit]")
    row = page.locator("#item-rows tr.item")
    await expect(row).to_have_count(1)
    await expect(row.locator(".status")).to_have_text("NEEDS_REVIEW")
    await expect(row).to_contain_text("E2E Ltd")
    tracking = (await row.locator("td.tracking").text_content() or "").strip()
    request_reference = (await row.locator("td.request-ref").text_content() or "").strip()
    assert tracking and request_reference
    await page.screenshot(path=screenshots(tmp_path) / "console.png", full_page=True)

    # What IntaSend's support would answer, asked with those two: the simulator's ledger.
    [entry] = [p for p in (await sim_json(stack, "/sim/ledger"))["payments"]
               if p["request_reference_id"] == request_reference]  # fmt: skip
    assert entry["tracking_id"] == tracking
    asked: list[str] = []

    async def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    # Re-check asks IntaSend again through POST /ops/items/recheck: a dispatcher asks about the batch now.
    await row.locator("button.recheck").click()
    notice = page.locator("#notice")
    await expect(notice).to_contain_text(f"Re-check of item {await row.get_attribute('data-item-id')} asked")
    await expect(notice).to_contain_text(f"IntaSend is asked about {tracking} now")
    assert "Ask IntaSend again" in asked.pop()
    if entry["paid"]:
        await row.locator("select").select_option("PAID")
        await row.locator("input.evidence").fill(entry["provider_reference"])
    else:
        await row.locator("select").select_option("FAILED")
        await row.locator("input.evidence").fill("IntaSend support: not paid")
    await row.locator("input.note").fill("ticket 4711")
    await row.locator("button.resolve").click()
    await expect(page.locator("#notice")).to_contain_text("resolved")
    assert len(asked) == 1 and "cannot be undone" in asked[0] and "E2E Ltd" in asked[0]
    expected = "COMPLETED" if entry["paid"] else "PARTIALLY_FAILED"
    assert (await client.status(payroll_id))["status"] == expected
    await expect(page.locator("#action-log li").first).to_contain_text("jane.oncall resolved item")
    await expect(page.locator("#action-log li").first).to_contain_text("ticket 4711")
    await assert_ledger_agrees(stack)

    # The other items of the payroll, found by phone in the 2547… form: paid, nothing to resolve.
    await page.select_option("#item-status", "")
    await page.fill("#search", "254799000101")
    await page.click("#search-form button[type=submit]")
    await expect(page.locator("#item-rows tr.item .status")).to_have_text("PAID")


async def test_a_dead_row_shows_its_last_error(make_stack, page: Page, tmp_path: Path) -> None:
    # Every initiate answers 500, and the first failed attempt is the last: the row goes dead.
    stack, client = await make_stack(
        dispatchers=1, SIM_ERROR_RATE_BEFORE="1", SIM_FAULT_ENDPOINTS="initiate", DISPATCHER_MAX_ERRORS="1"
    )
    payroll_id = await client.create("DEAD-2026-11", ["254799000301"])
    assert await client.process(payroll_id) == 202
    conn = await asyncpg.connect(stack.database_url)
    try:
        for _ in range(240):
            if await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'dead'"):
                break
            await asyncio.sleep(0.25)
        last_error = await conn.fetchval("SELECT last_error FROM outbox WHERE status = 'dead'")
    finally:
        await conn.close()
    assert last_error, "no row went dead"
    operator = await payrun(stack, "operator", "create", "--name", "sam.oncall")
    await log_in(page, stack.api, operator["api_key"])
    dead = page.locator('#outbox-rows tr.outbox-row[data-kind="dead"]')
    await expect(dead).to_have_count(1)
    await expect(dead).to_contain_text("DEAD-2026-11")
    await expect(dead.locator("td.last-error")).to_have_text(last_error)
    await expect(page.locator("#cards")).to_contain_text("rows dead")
