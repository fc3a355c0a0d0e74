"""`payrun employer set-callback`: the secret printed once and stored for signing, rotation, --keep-secret,
--clear, and one-line refusals that change nothing."""

from __future__ import annotations

import uuid

import asyncpg

from shared import events
from tests import factories
from tests.integration.test_employer_wallets import payrun, refused


async def _stored(pool: asyncpg.Pool, employer_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT url, secret FROM employer_callbacks WHERE employer_id = $1", employer_id
    )


async def test_set_callback_prints_the_secret_once_and_stores_it_for_signing(
    database_url: str, pool: asyncpg.Pool
) -> None:
    employer_id = await factories.employer(pool)
    ran = await payrun(
        database_url, "employer", "set-callback", str(employer_id), "--url", " https://h.example/e "
    )
    assert ran.code == 0, ran
    answer = ran.json()
    assert answer["employer_id"] == str(employer_id) and answer["url"] == "https://h.example/e"
    assert answer["secret"].startswith("whsec_") and len(answer["secret"]) >= 40
    assert answer["secret"] not in ran.stderr, "the secret goes to stdout only, never to the logs"
    stored = await _stored(pool, employer_id)
    assert stored is not None and (stored["url"], stored["secret"]) == (
        "https://h.example/e",
        answer["secret"],
    )

    # Again: a new secret replaces the old one at once.
    again = (await payrun(database_url, "employer", "set-callback", "--employer", str(employer_id), "--url",
                          "https://h.example/e2")).json()  # fmt: skip
    assert again["secret"] != answer["secret"]
    stored = await _stored(pool, employer_id)
    assert stored is not None and stored["secret"] == again["secret"]

    # --keep-secret: the URL only; nothing secret printed.
    kept = await payrun(
        database_url,
        "employer",
        "set-callback",
        str(employer_id),
        "--url",
        "https://h.example/e3",
        "--keep-secret",
    )
    assert kept.json()["secret"] is None and kept.json()["url"] == "https://h.example/e3"
    stored = await _stored(pool, employer_id)
    assert stored is not None and stored["secret"] == again["secret"]

    # What the employer may see: never the secret.
    config = await events.callback_config(pool, employer_id)
    assert config is not None and config.url == "https://h.example/e3" and not hasattr(config, "secret")

    cleared = await payrun(database_url, "employer", "set-callback", str(employer_id), "--clear")
    assert cleared.json() == {
        "employer_id": str(employer_id),
        "url": None,
        "previous_url": "https://h.example/e3",
    }
    assert await _stored(pool, employer_id) is None


async def test_set_callback_refusals_are_one_line_and_change_nothing(
    database_url: str, pool: asyncpg.Pool
) -> None:
    employer_id = await factories.employer(pool)
    missing = str(uuid.uuid4())
    refused(
        await payrun(database_url, "employer", "set-callback", missing, "--url", "https://h.example/e"),
        f"payrun employer set-callback: no employer has the id {missing}",
    )
    refused(
        await payrun(database_url, "employer", "set-callback", "acme", "--url", "https://h.example/e"),
        "EMPLOYER 'acme' is not an employer id",
    )
    refused(
        await payrun(
            database_url, "employer", "set-callback", str(employer_id), "--url", "ftp://h.example/e"
        ),
        "must be an absolute http:// or https:// URL",
    )
    refused(
        await payrun(
            database_url,
            "employer",
            "set-callback",
            str(employer_id),
            "--url",
            "https://h/e",
            "--keep-secret",
        ),
        "the employer has no callback yet",
    )
    refused(
        await payrun(database_url, "employer", "set-callback", str(employer_id), "--clear", "--keep-secret"),
        "--keep-secret goes with --url",
    )
    refused(
        await payrun(database_url, "employer", "set-callback", "--url", "https://h.example/e"),
        "name the employer once",
    )
    assert await pool.fetchval("SELECT count(*) FROM employer_callbacks") == 0
