"""The payroll-run scenario shared by hundred_users, scale and resources.

E employers, one payroll of W workers each (created through POST /payrolls), every process call released at
the same instant over pre-opened connections, then each "UI" polls its status endpoint the way a browser
would (If-None-Match, sleeping the Retry-After the API sends) until the payroll is final. The provider's
limit is INTASEND_MAX_RPS = SIM_MAX_RPS = rps. Measured: the process calls, the polls, what the provider
saw (/sim/stats and the simulator's per-request log), the drain time on the database clock, the simulator's
ledger against the payrolls, and each process's CPU time and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench import fixtures, host, postgres, processes, registry, simlog, stats, traffic
from shared import db


@dataclass(frozen=True)
class Case:
    label: str
    employers: int
    workers: int
    rps: int
    dispatchers: int = 1
    processing_s: float = 0.2
    create_concurrency: int = 16
    env: tuple[tuple[str, str], ...] = ()  # more environment for every process (e.g. DISPATCHER_CONCURRENCY)

    @property
    def p99_target_s(self) -> float:
        return 0.1 if self.employers <= 100 else 1.0


@dataclass
class Poll:
    final: str
    seen_at: float
    polls: int
    not_modified: int
    latencies: list[float]
    retries: int = 0


async def poll_until_final(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], deadline: float
) -> Poll:
    etag: str | None = None
    status = "PROCESSING"
    polls = not_modified = retries = 0
    latencies: list[float] = []
    while True:
        sent = dict(headers)
        if etag:
            sent["If-None-Match"] = etag
        started = time.perf_counter()
        try:
            async with client.get(url, headers=sent) as resp:
                body = await resp.read()
                code, retry_after, new_etag = (
                    resp.status,
                    resp.headers.get("Retry-After", "2"),
                    resp.headers.get("ETag"),
                )
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            retries += 1  # a browser retries a GET whose keep-alive connection was closed under it
            if retries > 20:
                raise
            continue
        latencies.append(time.perf_counter() - started)
        polls += 1
        if code == 304:
            not_modified += 1
        elif code == 200:
            etag = new_etag
            status = json.loads(body)["status"]
        else:
            raise RuntimeError(f"GET {url} answered {code}: {body[:200]!r}")
        if status != "PROCESSING":
            return Poll(status, time.perf_counter(), polls, not_modified, latencies, retries)
        wait_s = float(retry_after)
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{url} still PROCESSING at the deadline")
        await asyncio.sleep(wait_s)


async def run_case(opts: registry.Options, bench: str, case: Case, rep: int) -> dict[str, Any]:
    env = {
        "INTASEND_MAX_RPS": str(case.rps),
        "SIM_MAX_RPS": str(case.rps),
        "SIM_PROCESSING_S": str(case.processing_s),
        **dict(case.env),
    }
    name = f"{bench}-{case.label}-run{rep}"
    async with processes.running_stack(opts, name, dispatchers=case.dispatchers, **env) as st:
        conn = await db.connect(st.dsn)
        try:
            made = await fixtures.create_employers(conn, case.employers)
        finally:
            await conn.close()

        async with traffic.session(max(case.employers + 16, 64)) as client:
            started = time.perf_counter()
            payroll_ids = await traffic.create_payrolls_api(
                client, st.api, [key for _, key in made], f"RUN-{rep}", case.workers, case.create_concurrency
            )
            create_s = time.perf_counter() - started
            stats.say(
                f"{case.label} run {rep}: {case.employers} payrolls of {case.workers} created through the API in {create_s:.1f} s"
            )
            await st.sim_reset()

            opened = await traffic.warm_up(client, st.api, case.employers)
            before = st.resources()
            pg_cpu_before = postgres.Postgres.get().cpu_seconds()
            host_before, client_before = host.host_busy_s(), time.process_time()
            conn = await db.connect(st.dsn)
            try:
                t0_db = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
            finally:
                await conn.close()
            calls = [
                traffic.post(client, f"{st.api}/payrolls/{pid}/process", traffic.auth(key))
                for pid, (_, key) in zip(payroll_ids, made, strict=True)
            ]
            released, answers = await traffic.release_at_once(calls)
            accepted = sum(1 for a in answers if a.status == 202)
            stats.say(
                f"{case.label} run {rep}: {accepted}/{len(answers)} process calls answered 202 "
                f"(connections pre-opened: {opened})"
            )

            budget_s = 120 + 4 * (case.employers * 3 + case.employers * case.workers / 500 * 3) / case.rps
            deadline = time.perf_counter() + budget_s
            polls = await asyncio.gather(
                *(
                    poll_until_final(client, f"{st.api}/payrolls/{pid}/status", traffic.auth(key), deadline)
                    for pid, (_, key) in zip(payroll_ids, made, strict=True)
                )
            )
        after = st.resources()
        pg_cpu_after = postgres.Postgres.get().cpu_seconds()
        host_s, client_s = host.host_busy_s() - host_before, time.process_time() - client_before
        st.check_alive()

        conn = await db.connect(st.dsn)
        try:
            timing = await conn.fetchrow(
                """SELECT extract(epoch FROM max(finished_at))::float8 AS last_final,
                          extract(epoch FROM min(processing_started_at))::float8 AS first_started,
                          count(*) FILTER (WHERE status = 'COMPLETED') AS completed
                   FROM payrolls WHERE status <> 'DRAFT'"""
            )
            rows = await conn.fetchval("SELECT count(*) FROM outbox")
        finally:
            await conn.close()
        counted = await st.sim_stats()
        times, initiates, refused_in_log = simlog.sim_request_times(st.sim_log())
        ledger = await simlog.ledger_check(st.dsn, st.sim)

    latencies = [a.latency_s for a in answers]
    from_release = [a.done_at - released for a in answers]
    poll_lat = [x for p in polls for x in p.latencies]
    requests = int(counted["requests"])
    least_s = requests / case.rps
    drain_s = timing["last_final"] - t0_db
    span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
    dispatchers = [n for n in after if n.startswith("dispatcher")]

    def cpu(name: str) -> float:
        return after.get(name, {}).get("cpu_s", 0.0) - before.get(name, {}).get("cpu_s", 0.0)

    return {
        "case": case.label,
        "rep": rep,
        "employers": case.employers,
        "workers": case.workers,
        "rps": case.rps,
        "create_s": create_s,
        "accepted": accepted,
        "calls": len(answers),
        "non_202": {
            str(k): sum(1 for a in answers if a.status == k) for k in {a.status for a in answers} if k != 202
        },
        "p50_s": stats.pct(latencies, 50),
        "p99_s": stats.pct(latencies, 99),
        "max_s": max(latencies),
        "release_p99_s": stats.pct(from_release, 99),
        "makespan_s": max(from_release),
        "connections_preopened": opened,
        "polls": sum(p.polls for p in polls),
        "polls_304": sum(p.not_modified for p in polls),
        "poll_retries": sum(p.retries for p in polls),
        "poll_p50_s": stats.pct(poll_lat, 50),
        "poll_p99_s": stats.pct(poll_lat, 99),
        "ui_drain_s": max(p.seen_at for p in polls) - released,
        "final_states": sorted({p.final for p in polls}),
        "requests": requests,
        "accepted_requests": int(counted["accepted"]),
        "by_endpoint": counted["by_endpoint"],
        "rejected_429": int(counted["rejected_429_pace"]) + int(counted["rejected_429_storm"]),
        "requests_per_payroll": requests / case.employers,
        "outbox_rows": rows,
        "requests_per_batch": requests / rows if rows else float("nan"),
        "max_in_any_window": int(counted["max_in_any_window"]),
        "max_in_window_log": stats.max_in_window(times),
        # The backlog: from the first provider request until the last outbox row got its initiate (until then
        # some row was always waiting for a send slot); "whole" runs to the last request (the final polls).
        "utilisation_backlog": stats.utilisation(times, case.rps, until=initiates[-1] if initiates else None),
        "utilisation_whole": stats.utilisation(times, case.rps),
        "provider_span_s": span,
        "drain_s": drain_s,
        "least_s": least_s,
        "drain_over_least": drain_s / least_s,
        "ledger": ledger,
        "api_peak_mib": after.get("api", {}).get("peak_mib"),
        "dispatcher_peak_mib": max((after[n].get("peak_mib", 0.0) for n in dispatchers), default=None),
        "sim_peak_mib": after.get("sim", {}).get("peak_mib"),
        "cpu_s": {
            "api": cpu("api"),
            "dispatchers": sum(cpu(n) for n in dispatchers),
            "sim": cpu("sim"),
            "postgres": (pg_cpu_after - pg_cpu_before)
            if pg_cpu_before is not None and pg_cpu_after is not None
            else None,
            "bench_client": client_s,
            "whole_machine": host_s,
        },
        "refused_in_log": refused_in_log,
    }


ROW_HEADERS = [
    "case",
    "run",
    "202s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "429s",
    "req",
    "req/payroll",
    "max/1s",
    "used % backlog",
    "used % whole",
    "drain s",
    "least s",
    "drain/least",
    "ledger",
    "api MiB",
    "disp MiB",
]


def row(r: dict[str, Any], label: str | None = None) -> list[Any]:
    return [
        label or r["case"],
        str(r["rep"]),
        f"{r['accepted']}/{r['calls']}",
        stats.ms(r["p50_s"]),
        stats.ms(r["p99_s"]),
        stats.ms(r["max_s"]),
        r["rejected_429"],
        r["requests"],
        round(r["requests_per_payroll"], 2),
        f"{r['max_in_any_window']}/{r['rps']}",
        round(100 * r["utilisation_backlog"], 1),
        round(100 * r["utilisation_whole"], 1),
        round(r["drain_s"], 2),
        round(r["least_s"], 2),
        round(r["drain_over_least"], 3),
        "ok" if r["ledger"]["ok"] else "FAIL",
        round(r["api_peak_mib"] or 0, 1),
        round(r["dispatcher_peak_mib"] or 0, 1),
    ]


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric, the median over runs (counts that must be zero are summed: one 429 in any run shows)."""
    first = runs[0]
    m = dict(first)
    for key in (
        "p50_s",
        "p99_s",
        "max_s",
        "release_p99_s",
        "makespan_s",
        "requests",
        "requests_per_payroll",
        "requests_per_batch",
        "utilisation_backlog",
        "utilisation_whole",
        "drain_s",
        "least_s",
        "drain_over_least",
        "api_peak_mib",
        "dispatcher_peak_mib",
        "sim_peak_mib",
        "poll_p50_s",
        "poll_p99_s",
        "ui_drain_s",
        "create_s",
        "max_in_any_window",
    ):
        m[key] = stats.med(r[key] for r in runs)
    m["accepted"] = min(r["accepted"] for r in runs)
    m["rejected_429"] = sum(r["rejected_429"] for r in runs)
    m["max_in_any_window"] = max(r["max_in_any_window"] for r in runs)
    m["requests"] = round(m["requests"])
    m["ledger"] = {"ok": all(r["ledger"]["ok"] for r in runs)}
    m["rep"] = "median"
    m["cpu_s"] = {k: stats.med(r["cpu_s"][k] for r in runs) for k in first["cpu_s"]}
    return m


def report(bench: str, case: Case, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the runs and their median; record the figures against their targets."""
    m = median_row(runs)
    stats.table(
        f"{bench} {case.label}: {case.employers} employers x {case.workers} workers, INTASEND_MAX_RPS={case.rps}, "
        f"{case.dispatchers} dispatcher(s), SIM_PROCESSING_S={case.processing_s}",
        ROW_HEADERS,
        [row(r) for r in runs] + ([row(m)] if len(runs) > 1 else []),
    )
    extra = [
        [
            "process latency from the common release instant, p99 / max (ms)",
            f"{stats.ms(m['release_p99_s'])} / {stats.ms(m['makespan_s'])}",
        ],
        [
            "status polls (of them 304), p50 / p99 poll latency (ms)",
            f"{sum(r['polls'] for r in runs) // len(runs)} ({sum(r['polls_304'] for r in runs) // len(runs)}), "
            f"{stats.ms(m['poll_p50_s'])} / {stats.ms(m['poll_p99_s'])}",
        ],
        ["drain seen by the polling UIs (s)", stats.fmt(m["ui_drain_s"], 2)],
        ["provider requests by endpoint (run 1)", json.dumps(runs[0]["by_endpoint"], sort_keys=True)],
        ["provider requests per outbox row (batch)", stats.fmt(m["requests_per_batch"], 2)],
        ["creating the payrolls through POST /payrolls (s)", stats.fmt(m["create_s"], 2)],
        [
            "CPU seconds from release to drain: api / dispatchers / sim / postgres / bench client / whole machine",
            " / ".join(
                stats.fmt(m["cpu_s"][k], 1)
                for k in ("api", "dispatchers", "sim", "postgres", "bench_client", "whole_machine")
            ),
        ],
        ["peak RSS of the simulator (MiB)", stats.fmt(m["sim_peak_mib"], 1)],
        ["ledger (run 1)", json.dumps({k: v for k, v in runs[0]["ledger"].items() if k != "ok"})],
    ]
    stats.table(f"{bench} {case.label}: more", ["figure", "value"], extra)

    label = f"{case.label}"
    errors = sum(r["calls"] - r["accepted"] for r in runs)
    registry.record(
        bench,
        f"{label}: process calls answered 202",
        f"{m['accepted']}/{case.employers}",
        "",
        f"{case.employers} x 202",
        errors == 0,
    )
    registry.record(
        bench,
        f"{label}: process p99 (own send → answer)",
        round(m["p99_s"] * 1000, 1),
        "ms",
        f"< {case.p99_target_s * 1000:.0f} ms",
        m["p99_s"] < case.p99_target_s,
    )
    registry.record(
        bench,
        f"{label}: process p99 (from the common release)",
        round(m["release_p99_s"] * 1000, 1),
        "ms",
        f"< {case.p99_target_s * 1000:.0f} ms",
        m["release_p99_s"] < case.p99_target_s,
    )
    registry.record(
        bench, f"{label}: upstream 429s (all runs)", m["rejected_429"], "", "0", m["rejected_429"] == 0
    )
    if case.workers <= 10:
        registry.record(
            bench,
            f"{label}: provider requests per payroll",
            round(m["requests_per_payroll"], 2),
            "",
            "<= 4",
            m["requests_per_payroll"] <= 4,
        )
    else:
        registry.record(
            bench, f"{label}: provider requests per 500-item batch", round(m["requests_per_batch"], 2)
        )
    registry.record(
        bench,
        f"{label}: most requests in any 1 s window",
        m["max_in_any_window"],
        "",
        f"<= {case.rps}",
        m["max_in_any_window"] <= case.rps,
    )
    registry.record(
        bench,
        f"{label}: share of INTASEND_MAX_RPS used during the backlog",
        round(100 * m["utilisation_backlog"], 1),
        "%",
        ">= 95 %",
        m["utilisation_backlog"] >= 0.95,
        note=f"{100 * m['utilisation_whole']:.1f} % from the first to the last request",
    )
    registry.record(
        bench,
        f"{label}: drain / least time at the limit",
        round(m["drain_over_least"], 3),
        "",
        "<= 1.10",
        m["drain_over_least"] <= 1.10,
        note=f"drain {m['drain_s']:.2f} s, least {m['least_s']:.2f} s",
    )
    registry.record(
        bench,
        f"{label}: ledger (paid once, right amounts)",
        "ok" if m["ledger"]["ok"] else "FAIL",
        "",
        "ok",
        m["ledger"]["ok"],
    )
    registry.record(
        bench,
        f"{label}: peak RSS api / dispatcher",
        f"{m['api_peak_mib']:.0f} / {m['dispatcher_peak_mib']:.0f}",
        "MiB",
    )
    return m


async def run_cases(opts: registry.Options, bench: str, cases: list[Case], reps: int) -> list[dict[str, Any]]:
    medians = []
    for case in cases:
        runs = []
        for rep in range(1, reps + 1):
            runs.append(await run_case(opts, bench, case, rep))
        registry.DETAILS.setdefault(bench, {})[case.label] = runs
        medians.append(report(bench, case, runs))
    return medians
