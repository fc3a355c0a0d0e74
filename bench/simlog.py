"""What the simulator saw: its per-request log (times of accepted requests and initiates, 429s) and its
ledger, reconciled with payrun's items by testkit/ledger.py."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from testkit import ledger


def sim_request_times(log: Path) -> tuple[list[float], list[float], int]:
    """From the simulator's per-request log lines since its last `POST /sim/reset` (the span its `/sim/stats`
    counts: a run's own requests, not the dispatcher's start-up wallet check before it): epoch times of the
    provider requests it accepted, of the initiates among them, and the number it refused with 429."""
    accepted: list[float] = []
    initiates: list[float] = []
    refused = 0
    with log.open("rb") as f:
        for raw in f:
            if b'"sim_request"' not in raw:
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            path = str(rec.get("path", ""))
            if path == "/sim/reset":
                accepted, initiates, refused = [], [], 0
                continue
            if not path.startswith("/api/"):
                continue
            if rec.get("status") == 429:
                refused += 1
                continue
            ts = datetime.fromisoformat(rec["ts"]).timestamp()
            accepted.append(ts)
            if "/initiate" in path:
                initiates.append(ts)
    accepted.sort()
    initiates.sort()
    return accepted, initiates, refused


async def ledger_check(dsn: str, sim: str) -> dict[str, Any]:
    """testkit/ledger.py's reconciliation (nobody paid twice; PAID paid once, to its account, its amount;
    FAILED not paid; every payment accounted for), and what a benchmark run adds: every item PAID, every
    payroll COMPLETED, the ledger's total that of the payrolls. `ok` is all of it; the counts come along."""
    result = await ledger.reconcile(dsn, sim)
    return {**result.as_dict(), "ok": result.all_paid, "problems": result.problems()}
