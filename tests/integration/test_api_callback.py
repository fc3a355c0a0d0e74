"""GET /employer/callback: an employer sees where its events go, never the secret, never another's."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from shared import events
from tests.integration import api_support as api


async def test_an_employer_sees_its_callback_without_the_secret(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    acme, beta = await api.employer(pool, "Acme"), await api.employer(pool, "Beta")
    r = await client.get("/employer/callback", headers=api.auth(acme["api_key"]))
    assert r.status_code == 200
    assert r.json() == {"url": None, "signature": None, "created_at": None, "updated_at": None}

    async with pool.acquire() as conn:
        set_ = await events.set_callback(conn, uuid.UUID(acme["id"]), "https://hooks.acme.example/payrun?t=1")
    r = await client.get("/employer/callback", headers=api.auth(acme["api_key"]))
    shown = r.json()
    assert shown["url"] == "https://hooks.acme.example/payrun?t=1"
    assert shown["signature"].startswith("Payrun-Signature: t=<unix>,v1=")
    assert shown["created_at"] and shown["updated_at"]
    assert set_["secret"] is not None and set_["secret"] not in r.text

    r = await client.get("/employer/callback", headers=api.auth(beta["api_key"]))
    assert r.json()["url"] is None, "another employer's callback is not shown"


async def test_the_callback_needs_an_employer_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/employer/callback")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
