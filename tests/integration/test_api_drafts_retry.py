"""Deleting a DRAFT payroll (DELETE /payrolls/{id}) and retrying a finished payroll's FAILED items
(POST /payrolls/{id}/retry)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import schemas
from shared import errors, payrolls
from tests.integration import api_support as api

# -- helpers -----------------------------------------------------------------------------------------------


async def _finish(pool: asyncpg.Pool, payroll_id: str, item_statuses: list[str], status: str) -> None:
    """What the dispatcher would have recorded: each item final, the outbox rows done, the payroll final."""
    pid = uuid.UUID(payroll_id)
    async with pool.acquire() as conn, conn.transaction():
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM payroll_items WHERE payroll_id = $1 ORDER BY position", pid
        )]  # fmt: skip
        assert len(ids) == len(item_statuses)
        for item_id, item_status in zip(ids, item_statuses, strict=True):
            await conn.execute(
                """UPDATE payroll_items
                   SET status = $2,
                       failure_reason = CASE WHEN $2 = 'FAILED' THEN 'Invalid account' END,
                       provider_reference = CASE WHEN $2 = 'PAID' THEN 'QK' || id END
                   WHERE id = $1""",
                item_id,
                item_status,
            )
        await conn.execute(
            "UPDATE outbox SET status = 'done', processed_at = now() WHERE payroll_id = $1", pid
        )
        await conn.execute(
            "UPDATE payrolls SET status = $2, finished_at = now(), updated_at = now() WHERE id = $1",
            pid,
            status,
        )


def _five_items() -> dict[str, Any]:
    """Five items of three providers, with a narrative and a bank code to carry over."""
    body = api.payroll_body(items=5, reference="NOV")
    body["items"][1] = api.item(1, narrative="Salary Nov", amount="2500")
    body["items"][3] = api.item(3, provider="PESALINK", account="3000", bank_code="11", amount="42000.50")
    body["items"][4] = api.item(4, provider="INTASEND", account="W-4", amount="77.70")
    return body


async def _processed(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, statuses: list[str], status: str, **body: Any
) -> dict[str, Any]:
    payroll = await api.create_payroll(client, key, {**_five_items(), **body})
    r = await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key))
    assert r.status_code == 202, r.text
    await _finish(pool, payroll["id"], statuses, status)
    return payroll


MIXED = ["PAID", "FAILED", "NEEDS_REVIEW", "FAILED", "FAILED"]


# -- DELETE /payrolls/{id} ------------------------------------------------------------------------------------


async def test_deleting_a_draft_removes_it_and_frees_its_reference(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key)
    r = await client.delete(f"/payrolls/{payroll['id']}", headers=api.auth(key))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert await api.count(pool, "payrolls") == 0
    assert await api.count(pool, "payroll_items") == 0
    got = await client.get(f"/payrolls/{payroll['id']}", headers=api.auth(key))
    assert got.status_code == 404

    # Again: it is gone (404), and its reference can be used again.
    again = await client.delete(f"/payrolls/{payroll['id']}", headers=api.auth(key))
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"
    reused = await api.create_payroll(client, key)
    assert reused["reference"] == payroll["reference"] and reused["id"] != payroll["id"]


async def test_a_payroll_that_is_not_a_draft_is_never_deleted(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    processing = await api.create_payroll(client, key, api.payroll_body(reference="A"))
    assert (
        await client.post(f"/payrolls/{processing['id']}/process", headers=api.auth(key))
    ).status_code == 202
    finished = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    for payroll, status in ((processing, "PROCESSING"), (finished, "NEEDS_REVIEW")):
        r = await client.delete(f"/payrolls/{payroll['id']}", headers=api.auth(key))
        assert r.status_code == 409, r.text
        problem = r.json()
        assert problem["type"] == "urn:payrun:problem:payroll-not-draft"
        assert problem["payroll_status"] == status and status in problem["detail"]
        schemas.ProblemOut.model_validate(problem)
    assert await api.count(pool, "payrolls") == 2
    assert await api.count(pool, "payroll_items") == 7


async def test_another_employers_draft_is_not_found_and_stays(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    other = (await api.employer(pool, "Other"))["api_key"]
    payroll = await api.create_payroll(client, key)
    for path in (f"/payrolls/{payroll['id']}", f"/payrolls/{uuid.uuid4()}", "/payrolls/not-a-uuid"):
        r = await client.delete(path, headers=api.auth(other))
        assert r.status_code == 404, path
        assert r.json()["type"] == "urn:payrun:problem:payroll-not-found" or path.endswith("not-a-uuid")
    assert await api.count(pool, "payrolls") == 1
    r = await client.post(f"/payrolls/{payroll['id']}/retry", headers=api.auth(other))
    assert r.status_code == 404


async def test_delete_and_process_at_once_never_both_succeed(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    outcomes: dict[tuple[int, int], int] = {}
    for n in range(40):
        payroll = await api.create_payroll(client, key, api.payroll_body(reference=f"RACE-{n}"))
        pid = payroll["id"]
        calls = [
            client.delete(f"/payrolls/{pid}", headers=api.auth(key)),
            client.post(f"/payrolls/{pid}/process", headers=api.auth(key)),
        ]
        if n % 2:
            calls.reverse()
        first, second = await asyncio.gather(*calls)
        deleted, processed = (first, second) if n % 2 == 0 else (second, first)
        pair = (deleted.status_code, processed.status_code)
        outcomes[pair] = outcomes.get(pair, 0) + 1
        row = await pool.fetchrow("SELECT status FROM payrolls WHERE id = $1", uuid.UUID(pid))
        rows = await pool.fetchval("SELECT count(*) FROM outbox WHERE payroll_id = $1", uuid.UUID(pid))
        items = await pool.fetchval(
            "SELECT count(*) FROM payroll_items WHERE payroll_id = $1", uuid.UUID(pid)
        )
        if pair == (204, 404):  # deleted first: nothing was processed
            assert row is None and rows == 0 and items == 0
            assert processed.json()["type"] == "urn:payrun:problem:payroll-not-found"
        else:  # processed first: nothing was deleted
            assert pair == (409, 202), (pair, deleted.text, processed.text)
            assert row["status"] == "PROCESSING" and rows == 1 and items == 2
            assert deleted.json()["payroll_status"] == "PROCESSING"
    assert set(outcomes) <= {(204, 404), (409, 202)}, outcomes


@pytest.mark.parametrize("first", ["delete", "process"])
async def test_whichever_commits_first_wins_and_the_other_waits_for_it(
    pool: asyncpg.Pool, client: httpx.AsyncClient, key: str, first: str
) -> None:
    """Both orders forced: the first holds the payroll's row lock in an open transaction while the other
    starts, and the other answers from what the first committed."""
    payroll = await api.create_payroll(client, key)
    pid = uuid.UUID(payroll["id"])
    employer_id = await pool.fetchval("SELECT employer_id FROM payrolls WHERE id = $1", pid)

    async def delete(conn: Any) -> None:
        await payrolls.delete_draft(conn, employer_id, pid)

    async def process(conn: Any) -> None:
        await payrolls.start_processing(conn, employer_id, pid, batch_size=500)

    do_first, do_second = (delete, process) if first == "delete" else (process, delete)
    async with pool.acquire() as a, pool.acquire() as b:
        tx = a.transaction()
        await tx.start()
        await do_first(a)
        second = asyncio.create_task(do_second(b))
        await asyncio.sleep(0.3)
        assert not second.done(), "the second must wait for the first's row lock"
        await tx.commit()
        if first == "delete":
            with pytest.raises(errors.PayrollNotFound):
                await second
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
            assert await api.count(pool, "payrolls") == 0
        else:
            with pytest.raises(errors.PayrollNotDraft):
                await second
            assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", pid) == "PROCESSING"
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


# -- POST /payrolls/{id}/retry -------------------------------------------------------------------------------


async def test_a_retry_is_a_draft_of_exactly_the_failed_items(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    r = await client.post(f"/payrolls/{old['id']}/retry", headers=api.auth(key))
    assert r.status_code == 201, r.text
    new = r.json()
    schemas.PayrollDetailOut.model_validate(new)
    assert r.headers["location"] == f"/payrolls/{new['id']}"
    assert new["id"] != old["id"] and new["retry_of"] == old["id"]
    assert (new["status"], new["reference"], new["currency"]) == ("DRAFT", "NOV-retry-1", "KES")
    failed = [old["items"][n] for n in (1, 3, 4)]  # not PAID (0), not NEEDS_REVIEW (2)
    assert [(i["name"], i["account"], i["amount"], i["provider"]) for i in new["items"]] == [
        (i["name"], i["account"], i["amount"], i["provider"]) for i in failed
    ]
    assert all(i["status"] == "PENDING" and i["failure_reason"] is None for i in new["items"])
    assert (new["item_count"], new["total_amount"], new["paid_amount"]) == (3, "44578.20", "0.00")
    rows = await pool.fetch(
        "SELECT position, bank_code, narrative FROM payroll_items WHERE payroll_id = $1 ORDER BY position",
        uuid.UUID(new["id"]),
    )
    assert [tuple(row) for row in rows] == [(0, None, "Salary Nov"), (1, "11", None), (2, None, None)]

    # Shown on the detail and in the list; the old payroll is untouched and shows null.
    got = await client.get(f"/payrolls/{new['id']}", headers=api.auth(key))
    assert got.json() == new
    listed = {
        p["id"]: p["retry_of"] for p in (await client.get("/payrolls", headers=api.auth(key))).json()["items"]
    }
    assert listed == {new["id"]: old["id"], old["id"]: None}
    old_now = (await client.get(f"/payrolls/{old['id']}", headers=api.auth(key))).json()
    assert old_now["status"] == "NEEDS_REVIEW" and [i["status"] for i in old_now["items"]] == MIXED

    # It is processed as any payroll: its outbox rows carry its own items only.
    assert (await client.post(f"/payrolls/{new['id']}/process", headers=api.auth(key))).status_code == 202
    payloads = [r["payload"] for r in await pool.fetch(
        "SELECT payload FROM outbox WHERE payroll_id = $1 ORDER BY id", uuid.UUID(new["id"])
    )]  # fmt: skip
    assert sorted(i for p in payloads for i in p["item_ids"]) == sorted(int(i["id"]) for i in new["items"])


async def test_retry_refuses_what_it_cannot_retry(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    draft = await api.create_payroll(client, key, api.payroll_body(reference="D"))
    processing = await api.create_payroll(client, key, api.payroll_body(reference="P"))
    await client.post(f"/payrolls/{processing['id']}/process", headers=api.auth(key))
    completed = await _processed(client, key, pool, ["PAID"] * 5, "COMPLETED", reference="C")
    review = await _processed(client, key, pool, ["PAID", "NEEDS_REVIEW", "PAID", "PAID", "PAID"],
                              "NEEDS_REVIEW", reference="R")  # fmt: skip
    before = await api.count(pool, "payrolls")
    for payroll, slug, status in (
        (draft, "payroll-not-final", "DRAFT"),
        (processing, "payroll-not-final", "PROCESSING"),
        (completed, "nothing-to-retry", None),
        (review, "nothing-to-retry", None),
    ):
        r = await client.post(f"/payrolls/{payroll['id']}/retry", headers=api.auth(key))
        assert r.status_code == 409, r.text
        assert r.json()["type"] == f"urn:payrun:problem:{slug}"
        assert r.json().get("payroll_status") == status
    assert (await client.post(f"/payrolls/{uuid.uuid4()}/retry", headers=api.auth(key))).status_code == 404
    assert await api.count(pool, "payrolls") == before


async def test_a_payroll_is_retried_once_and_again_after_its_retry_is_deleted(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    first = (await client.post(f"/payrolls/{old['id']}/retry", headers=api.auth(key))).json()
    again = await client.post(f"/payrolls/{old['id']}/retry", headers=api.auth(key))
    assert again.status_code == 409
    assert again.json()["type"] == "urn:payrun:problem:already-retried"
    assert again.json()["retry_id"] == first["id"]

    # The retry's failures are retried from the retry: the chain grows one link at a time.
    await client.post(f"/payrolls/{first['id']}/process", headers=api.auth(key))
    await _finish(pool, first["id"], ["PAID", "FAILED", "PAID"], "PARTIALLY_FAILED")
    second = await client.post(f"/payrolls/{first['id']}/retry", headers=api.auth(key))
    assert second.status_code == 201, second.text
    assert second.json()["reference"] == "NOV-retry-1-retry-1"
    assert second.json()["retry_of"] == first["id"]
    assert [i["account"] for i in second.json()["items"]] == ["3000"]

    # A retry still a DRAFT can be deleted; then its payroll can be retried again, under the same reference.
    assert (await client.delete(f"/payrolls/{second.json()['id']}", headers=api.auth(key))).status_code == 204
    third = await client.post(f"/payrolls/{first['id']}/retry", headers=api.auth(key))
    assert third.status_code == 201 and third.json()["reference"] == "NOV-retry-1-retry-1"


async def test_concurrent_retries_of_one_payroll_make_one_retry(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    results = await asyncio.gather(
        *(client.post(f"/payrolls/{old['id']}/retry", headers=api.auth(key)) for _ in range(6))
    )
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409, 409, 409]
    assert await pool.fetchval("SELECT count(*) FROM payrolls WHERE retry_of IS NOT NULL") == 1


async def test_the_default_reference_skips_taken_ones_and_a_custom_one_is_checked(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await api.create_payroll(client, key, api.payroll_body(reference="NOV-retry-1"))
    await api.create_payroll(client, key, api.payroll_body(reference="NOV-retry-2"))
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    r = await client.post(f"/payrolls/{old['id']}/retry", headers=api.auth(key))
    assert r.json()["reference"] == "NOV-retry-3"
    assert (await client.delete(f"/payrolls/{r.json()['id']}", headers=api.auth(key))).status_code == 204

    # A reference already used: the duplicate-reference problem, naming the payroll that holds it.
    taken = await client.post(
        f"/payrolls/{old['id']}/retry", json={"reference": "NOV-retry-1"}, headers=api.auth(key)
    )
    assert taken.status_code == 409
    holder = await pool.fetchval("SELECT id FROM payrolls WHERE reference = 'NOV-retry-1'")
    assert taken.json()["type"] == "urn:payrun:problem:duplicate-reference"
    assert taken.json()["payroll_id"] == str(holder)

    # Invalid bodies are 422 / 400 / 415 and write nothing.
    for kwargs, status in (
        ({"json": {"reference": ""}}, 422),
        ({"json": {"reference": "x", "extra": 1}}, 422),
        ({"json": ["x"]}, 422),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400),
        ({"content": b"reference=x", "headers": {"Content-Type": "text/plain"}}, 415),
    ):
        headers = {**api.auth(key), **kwargs.pop("headers", {})}
        bad = await client.post(f"/payrolls/{old['id']}/retry", headers=headers, **kwargs)
        assert bad.status_code == status, (kwargs, bad.text)

    custom = await client.post(
        f"/payrolls/{old['id']}/retry", json={"reference": "  NOV second run "}, headers=api.auth(key)
    )
    assert custom.status_code == 201, custom.text
    assert custom.json()["reference"] == "NOV second run"
    assert await pool.fetchval("SELECT count(*) FROM payrolls WHERE retry_of IS NOT NULL") == 1


async def test_a_long_reference_is_shortened_to_fit_its_suffix(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW", reference="R" * 100)
    r = await client.post(f"/payrolls/{old['id']}/retry", json={}, headers=api.auth(key))
    assert r.status_code == 201, r.text
    assert r.json()["reference"] == "R" * 92 + "-retry-1"
    assert len(r.json()["reference"]) == 100


async def test_retry_with_an_idempotency_key_replays_its_first_answer(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    headers = {**api.auth(key), "Idempotency-Key": "retry-nov-1"}
    first = await client.post(f"/payrolls/{old['id']}/retry", headers=headers)
    again = await client.post(f"/payrolls/{old['id']}/retry", headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await pool.fetchval("SELECT count(*) FROM payrolls WHERE retry_of IS NOT NULL") == 1

    # No body and `{}` are the same request; another body with the same key is a 422.
    empty = await client.post(f"/payrolls/{old['id']}/retry", json={}, headers=headers)
    assert empty.status_code == 201 and empty.json() == first.json()
    other = await client.post(f"/payrolls/{old['id']}/retry", json={"reference": "X"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == "urn:payrun:problem:idempotency-key-reused"


async def test_paid_amount_of_a_retry_counts_only_its_own_items(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    old = await _processed(client, key, pool, MIXED, "NEEDS_REVIEW")
    new = (await client.post(f"/payrolls/{old['id']}/retry", headers=api.auth(key))).json()
    await client.post(f"/payrolls/{new['id']}/process", headers=api.auth(key))
    await _finish(pool, new["id"], ["PAID", "PAID", "PAID"], "COMPLETED")
    got = (await client.get(f"/payrolls/{new['id']}", headers=api.auth(key))).json()
    assert got["paid_amount"] == "44578.20"
    old_paid = (await client.get(f"/payrolls/{old['id']}", headers=api.auth(key))).json()["paid_amount"]
    assert Decimal(old_paid) == Decimal("1500.00")
