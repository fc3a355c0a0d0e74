"""Cancelling from the pages, in Debian's Chromium against the real processes (as tests/e2e/test_console.py):
two payrolls wait for funds (the simulator's wallet is short); both pages say how much is missing; the
employer cancels one from the dashboard (after a confirmation), an operator the other from the console (the
action log names the operator); the wallet is then funded and nothing is paid (the simulator's ledger)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.e2e import test_console as console
from tests.e2e import test_dashboard as browser
from tests.e2e.conftest import assert_ledger_agrees
from tests.e2e.stack import sim_json
from tests.e2e.test_funds_and_cancel import sim_post, waiting_for_funds

page = browser.page  # the fixture: a fresh page in Debian's Chromium, failing on a CSP violation
pytestmark = browser.pytestmark  # skipped, saying why, without Chromium or Playwright


async def test_payrolls_waiting_for_funds_are_cancelled_from_the_dashboard_and_the_console(
    make_stack, page: Page, tmp_path: Path
) -> None:
    stack, client = await make_stack(
        dispatchers=1,
        SIM_BALANCE="1500.00",
        SIM_CHARGE="10.00",
        DISPATCHER_FUNDS_RECHECK_S="1",
        DISPATCHER_FUNDS_RECHECK_MAX_S="2",
    )
    # Each 5 x 400.00 (+50.00 charges): 550.00 more than the wallet holds.
    by_employer = await client.create("SHORT-A", [f"2547990005{n:02d}" for n in range(5)], amount="400.00")
    by_operator = await client.create("SHORT-B", [f"2547990006{n:02d}" for n in range(5)], amount="400.00")
    for payroll_id in (by_employer, by_operator):
        assert await client.process(payroll_id) == 202
        await waiting_for_funds(client, payroll_id)
    asked: list[str] = []

    async def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)

    # The employer's dashboard: the row says it waits for funds and how much is missing; Cancel asks first.
    await browser.log_in(page, stack.api, client.headers["Authorization"].removeprefix("Bearer "))
    row = page.locator(f'tr.payroll[data-payroll-id="{by_employer}"]')
    await expect(row.locator(".funds-wait")).to_contain_text("Waiting for funds: KES 550.00 short")
    await expect(row.locator(".funds-wait")).to_contain_text("next check")
    await page.screenshot(
        path=console.screenshots(tmp_path) / "dashboard-waiting-for-funds.png", full_page=True
    )
    await row.locator("button.cancel").click()
    await expect(row.locator(".status")).to_have_text("Cancelled")
    await expect(row.locator(".funds-wait")).to_be_hidden()
    await expect(row.locator("button.cancel")).to_be_hidden()
    assert len(asked) == 1 and "not yet approved will not be paid" in asked[0], asked
    assert "waiting for funds" in asked[0]
    await expect(row.locator(".progress-text")).to_contain_text("5 not paid of 5")
    await row.locator("button.toggle").click()
    items = page.locator(f'tr.detail[data-payroll-id="{by_employer}"] tr.item')
    await expect(items).to_have_count(5)
    await expect(items.locator(".status")).to_have_text(["Cancelled"] * 5)
    assert (await client.status(by_employer))["status"] == "CANCELLED"

    # The operator's console: the other payroll, waiting, cancelled on the employer's behalf with a note.
    operator = await console.payrun(stack, "operator", "create", "--name", "jane.oncall")
    await console.log_in(page, stack.api, operator["api_key"])
    row = page.locator(f'#payroll-rows tr.payroll[data-payroll-id="{by_operator}"]')
    await expect(row.locator(".funds-wait")).to_contain_text("Waiting for funds: KES 550.00 short")
    cancelled_row = page.locator(f'#payroll-rows tr.payroll[data-payroll-id="{by_employer}"]')
    await expect(cancelled_row.locator(".status")).to_have_text("CANCELLED")
    await expect(cancelled_row.locator("button.cancel")).to_have_count(0)
    await row.locator("input.note").fill("employer phoned, ticket 88")
    await row.locator("button.cancel").click()
    await expect(page.locator("#notice")).to_contain_text("SHORT-B: 5 item(s) cancelled now")
    assert len(asked) == 2 and "You are recorded" in asked[1] and "E2E Ltd" in asked[1], asked
    await expect(row.locator(".status")).to_have_text("CANCELLED")
    log = page.locator("#action-log li")
    await expect(log.first).to_contain_text("jane.oncall cancelled SHORT-B (E2E Ltd): 5 item(s) cancelled")
    await expect(log.first).to_contain_text("ticket 88")
    await expect(log.nth(1)).to_contain_text("The employer cancelled SHORT-A")
    await page.screenshot(path=console.screenshots(tmp_path) / "console-cancelled.png", full_page=True)
    assert (await client.status(by_operator))["status"] == "CANCELLED"

    # Funds arrive after all: a dispatcher that would still approve has every chance, and pays nobody.
    await sim_post(stack.sim, "/sim/wallets/SIMWLT1/fund", {"amount": "10000.00"})
    await asyncio.sleep(2.5)
    assert await assert_ledger_agrees(stack) == {"CANCELLED": 10}
    stats = await sim_json(stack, "/sim/stats")
    assert stats["by_endpoint"].get("approve", 0) == 0
