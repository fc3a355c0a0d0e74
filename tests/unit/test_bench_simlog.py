"""The benchmarks' reading of the simulator's request log counts a run's own requests only."""

from __future__ import annotations

import json
from pathlib import Path

from bench import simlog, stats


def _line(ts: str, path: str, status: int = 200) -> str:
    return json.dumps({"ts": ts, "event": "sim_request", "method": "POST", "path": path, "status": status})


def test_requests_before_the_last_reset_are_not_the_runs(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    lines = [
        "payrun sim: listening",
        # The dispatcher's start-up wallet check, seconds before the run: it is not part of the backlog.
        _line("2026-12-01T00:00:46.000+00:00", "/api/v1/wallets/"),
        _line("2026-12-01T00:00:50.000+00:00", "/sim/reset"),
        _line("2026-12-01T00:00:51.000+00:00", "/api/v1/send-money/initiate/"),
        _line("2026-12-01T00:00:51.100+00:00", "/api/v1/send-money/initiate/", status=429),
        _line("2026-12-01T00:00:51.500+00:00", "/api/v1/send-money/approve/"),
        _line("2026-12-01T00:00:52.000+00:00", "/api/v1/send-money/initiate/"),
    ]
    log.write_text("\n".join(lines) + "\n")

    accepted, initiates, refused = simlog.sim_request_times(log)

    assert len(accepted) == 3 and len(initiates) == 2 and refused == 1
    # Three requests spaced 0.5 s apart at 2 rps: the whole limit. Counted from the wallet check: 0.25.
    assert stats.utilisation(accepted, 2, until=initiates[-1]) == 1.0
