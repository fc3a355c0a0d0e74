"""coalescing: many employers click Run at the same instant; how soon is every payroll final, and how many
provider requests does that take? SIM_PROCESSING_S=1, INTASEND_MAX_RPS = SIM_MAX_RPS, one dispatcher
(the figures the coalescing of payrolls into shared batches was built for).

Cases (employers x workers @ requests/s): 100x10@5 and 100x10@10 (time from the clicks until every payroll
is final, p50/p99 of the per-payroll completion, provider requests and requests per 1,000 items, upstream
429s and the most requests in any 1 s window, the ledger item by item, process-call latency); 1000x10@5
(run once, stopped after 240 s if not final by then); big+100x10@5: one 10,000-worker payroll started 1 s
before the 100 x 10, for the small payrolls' p99 completion against 100x10@5's. --quick: 20x10@5, 20x10@10,
100x10@5 as the stand-in for 1000x10@5 (stopped after 90 s), a 2,000-worker payroll + 20x10@5.

What is used: the HTTP API (POST /payrolls, POST /payrolls/{id}/process released together over pre-opened
connections), the simulator's /sim/stats and /sim/ledger, and the database (employers made in SQL, the
clicks' instant and each payroll's finished_at on the database clock). Targets are printed beside the
figures, not asserted."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench import fixtures, processes, registry, simlog, stats, traffic
from shared import db

NAME = "coalescing"
PROCESSING_S = 1.0

# The targets
ALL_FINAL_100_S = 5.0  # 100 x 10: every payroll final within 5 s of the clicks
ALL_FINAL_1000_S = 15.0  # 1,000 x 10: within 15 s
REQUESTS_PER_1000_ITEMS = 8.0  # 1,000 x 10: at most 8 provider requests per 1,000 items
BIG_RATIO = 1.5  # the small payrolls' p99 completion with a 10,000-worker payroll ahead: at most 1.5x alone


@dataclass(frozen=True)
class Case:
    label: str
    employers: int
    workers: int
    rps: int
    kind: str  # "small" (100 x 10), "many" (1,000 x 10), "big" (a big payroll ahead of the small ones)
    stands_for: str  # the case this measures (a smaller one with --quick)
    timeout_s: float = 240.0  # stop waiting for the payrolls this long after the clicks
    once: bool = False  # one run whatever --runs says (the long case)
    big_workers: int = 0
    big_lead_s: float = 1.0  # the big payroll's Run clicked this long before the small ones'
    reference: str | None = None  # label of the same small payrolls without the big one (for the ratio)
    create_concurrency: int = 16

    @property
    def items(self) -> int:
        return self.employers * self.workers + self.big_workers


def cases(opts: registry.Options) -> list[Case]:
    if opts.quick:
        return [
            Case("20x10@5", 20, 10, 5, "small", "100x10@5", timeout_s=90),
            Case("20x10@10", 20, 10, 10, "small", "100x10@10", timeout_s=90),
            Case("100x10@5", 100, 10, 5, "many", "1000x10@5", timeout_s=90, once=True),
            Case(
                "big2000+20x10@5",
                20,
                10,
                5,
                "big",
                "big+100x10@5",
                timeout_s=90,
                big_workers=2_000,
                reference="20x10@5",
            ),
        ]
    return [
        Case("100x10@5", 100, 10, 5, "small", "100x10@5"),
        Case("100x10@10", 100, 10, 10, "small", "100x10@10"),
        Case("1000x10@5", 1000, 10, 5, "many", "1000x10@5", once=True),
        Case("big+100x10@5", 100, 10, 5, "big", "big+100x10@5", big_workers=10_000, reference="100x10@5"),
    ]


async def _db_now(conn: asyncpg.Connection) -> float:
    return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))


async def run_case(opts: registry.Options, case: Case, rep: int) -> dict[str, Any]:
    env = {
        "INTASEND_MAX_RPS": str(case.rps),
        "SIM_MAX_RPS": str(case.rps),
        "SIM_PROCESSING_S": str(PROCESSING_S),
    }
    async with processes.running_stack(opts, f"{NAME}-{case.label}-run{rep}", **env) as st:
        conn = await db.connect(st.dsn)
        try:
            made = await fixtures.create_employers(conn, case.employers + (1 if case.big_workers else 0))
        finally:
            await conn.close()
        small = made[: case.employers]

        async with traffic.session(max(case.employers + 16, 64)) as client:
            started = time.perf_counter()
            small_ids = await traffic.create_payrolls_api(
                client, st.api, [key for _, key in small], f"CO-{rep}", case.workers, case.create_concurrency
            )
            big_id: str | None = None
            if case.big_workers:
                big_key = made[-1][1]
                big_id = await traffic.create_payroll_api(
                    client, st.api, big_key, f"CO-{rep}-BIG", case.employers * case.workers, case.big_workers
                )
            stats.say(
                f"{case.label} run {rep}: {case.employers} payrolls of {case.workers}"
                + (f" and one of {case.big_workers:,}" if case.big_workers else "")
                + f" created through the API in {time.perf_counter() - started:.1f} s"
            )
            await st.sim_reset()
            opened = await traffic.warm_up(client, st.api, case.employers)

            conn = await db.connect(st.dsn)
            try:
                big_call: traffic.Call | None = None
                t_big_db: float | None = None
                if big_id is not None:
                    t_big_db = await _db_now(conn)
                    sent = time.perf_counter()
                    code, body = await traffic.post(
                        client, f"{st.api}/payrolls/{big_id}/process", traffic.auth(made[-1][1])
                    )()
                    now = time.perf_counter()
                    big_call = traffic.Call(code, now - sent, now, body)
                    await asyncio.sleep(max(0.0, case.big_lead_s - (time.perf_counter() - sent)))
                t0_db = await _db_now(conn)
                calls = [
                    traffic.post(client, f"{st.api}/payrolls/{pid}/process", traffic.auth(key))
                    for pid, (_, key) in zip(small_ids, small, strict=True)
                ]
                _, answers = await traffic.release_at_once(calls)
                accepted = sum(1 for a in answers if a.status == 202)
                stats.say(
                    f"{case.label} run {rep}: {accepted}/{len(answers)} process calls answered 202 "
                    f"(connections pre-opened: {opened})"
                    + (f"; the big payroll's call answered {big_call.status}" if big_call else "")
                )

                # Wait on the database until every payroll has its finished_at, or the timeout.
                all_ids = [*small_ids, *([big_id] if big_id else [])]
                timed_out = False
                said = time.monotonic()
                while True:
                    row = await conn.fetchrow(
                        """SELECT count(*) FILTER (WHERE finished_at IS NULL) AS open,
                                  extract(epoch FROM clock_timestamp())::float8 AS now
                           FROM payrolls WHERE id = ANY($1::uuid[])""",
                        all_ids,
                    )
                    if row["open"] == 0:
                        break
                    if row["now"] - t0_db > case.timeout_s:
                        timed_out = True
                        stats.say(
                            f"{case.label} run {rep}: not finished within {case.timeout_s:.0f} s "
                            f"({row['open']} of {len(all_ids)} payrolls not final): stopping"
                        )
                        break
                    if time.monotonic() - said >= 30:
                        said = time.monotonic()
                        stats.say(
                            f"{case.label} run {rep}: {row['now'] - t0_db:.0f} s after the clicks, "
                            f"{row['open']} of {len(all_ids)} payrolls not final yet"
                        )
                    await asyncio.sleep(0.2)
                stopped_db = await _db_now(conn)
                payrolls = await conn.fetch(
                    """SELECT id::text AS id, status, extract(epoch FROM finished_at)::float8 AS finished
                       FROM payrolls WHERE id = ANY($1::uuid[])""",
                    all_ids,
                )
                item_states = {
                    r["status"]: int(r["n"])
                    for r in await conn.fetch(
                        """SELECT status, count(*) AS n FROM payroll_items
                           WHERE payroll_id = ANY($1::uuid[]) GROUP BY status""",
                        all_ids,
                    )
                }
            finally:
                await conn.close()
        counted = await st.sim_stats()
        ledger = None if timed_out else await simlog.ledger_check(st.dsn, st.sim)
        st.check_alive()

    finished = {r["id"]: r["finished"] for r in payrolls}
    small_done = [finished[pid] - t0_db for pid in small_ids if finished.get(pid) is not None]
    unfinished_small = len(small_ids) - len(small_done)
    # Unfinished payrolls count as not final at the stop: percentiles over all of them, +inf for those.
    small_all = small_done + [math.inf] * unfinished_small
    done_all = [f for f in finished.values() if f is not None]
    latencies = [a.latency_s for a in answers]
    requests = int(counted["requests"])
    items_final = sum(n for s, n in item_states.items() if s in ("PAID", "FAILED", "NEEDS_REVIEW"))
    items_sent = sum(n for s, n in item_states.items() if s != "PENDING")  # reached the provider
    return {
        "case": case.label,
        "stands_for": case.stands_for,
        "rep": rep,
        "employers": case.employers,
        "workers": case.workers,
        "big_workers": case.big_workers,
        "rps": case.rps,
        "items": case.items,
        "accepted": accepted,
        "calls": len(answers),
        "non_202": sorted({str(a.status) for a in answers if a.status != 202}),
        "process_p50_s": stats.pct(latencies, 50),
        "process_p99_s": stats.pct(latencies, 99),
        "process_max_s": max(latencies),
        "big_process_status": big_call.status if big_call else None,
        "big_process_s": big_call.latency_s if big_call else None,
        "timed_out": timed_out,
        "timeout_s": case.timeout_s,
        "stopped_after_s": stopped_db - t0_db,
        "unfinished": len(all_ids) - len(done_all),
        # from the small payrolls' clicks until the last payroll (big one included) is final
        "all_final_s": (max(done_all) - t0_db) if not timed_out and done_all else math.nan,
        "small_final_s": max(small_done) if small_done and not unfinished_small else math.nan,
        "completion_p50_s": stats.pct(small_all, 50),
        "completion_p99_s": stats.pct(small_all, 99),
        "big_final_s": (
            finished[big_id] - t_big_db
            if big_id and t_big_db is not None and finished.get(big_id) is not None
            else math.nan
        ),
        "payroll_states": sorted({r["status"] for r in payrolls}),
        "item_states": item_states,
        "items_final": items_final,
        "requests": requests,
        "accepted_requests": int(counted["accepted"]),
        "by_endpoint": counted["by_endpoint"],
        "provider_batches": int(counted.get("batches", 0)),
        "items_sent": items_sent,
        # requests per 1,000 items: of all items when every payroll is final; when the run was stopped, of the
        # items sent to the provider so far (an estimate: some of their requests, e.g. status, are still due)
        "requests_per_1000_items": (
            1000 * requests / case.items
            if not timed_out
            else (1000 * requests / items_sent if items_sent else math.nan)
        ),
        "rejected_429_pace": int(counted["rejected_429_pace"]),
        "rejected_429_storm": int(counted["rejected_429_storm"]),
        "max_in_any_window": int(counted["max_in_any_window"]),
        "ledger": ledger,
    }


_MEDIAN_KEYS = (
    "process_p50_s",
    "process_p99_s",
    "process_max_s",
    "big_process_s",
    "stopped_after_s",
    "all_final_s",
    "small_final_s",
    "completion_p50_s",
    "completion_p99_s",
    "big_final_s",
    "requests",
    "provider_batches",
    "requests_per_1000_items",
)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over runs; 429s summed, the window's maximum and any timeout kept, the ledger
    ok only if every run's was."""
    m = dict(runs[0])
    for key in _MEDIAN_KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        if any(v == math.inf for v in values):
            m[key] = sorted(values)[len(values) // 2]
        else:
            m[key] = stats.med(values)
    m["accepted"] = min(r["accepted"] for r in runs)
    m["rejected_429_pace"] = sum(r["rejected_429_pace"] for r in runs)
    m["rejected_429_storm"] = sum(r["rejected_429_storm"] for r in runs)
    m["max_in_any_window"] = max(r["max_in_any_window"] for r in runs)
    m["timed_out"] = any(r["timed_out"] for r in runs)
    m["unfinished"] = max(r["unfinished"] for r in runs)
    ledgers = [r["ledger"] for r in runs]
    m["ledger"] = None if any(x is None for x in ledgers) else {"ok": all(x["ok"] for x in ledgers)}
    m["rep"] = "median" if len(runs) > 1 else runs[0]["rep"]
    m["requests"] = round(m["requests"])
    m["provider_batches"] = round(m["provider_batches"])
    return m


def _s(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == math.inf:
        return "not final"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "not final" if math.isinf(value) else f"{value:.2f}x"


def _final(r: dict[str, Any]) -> str:
    """When the last payroll was final (from the small payrolls' clicks), or that it was not at the stop."""
    if r["timed_out"]:
        return f"> {r['timeout_s']:.0f} s (not finished)"
    return _s(r["all_final_s"], 2) + " s"


def _ledger(r: dict[str, Any]) -> str:
    if r["ledger"] is None:
        return "not checked (unfinished)"
    return "exact" if r["ledger"]["ok"] else "WRONG"


HEADERS = [
    "case",
    "run",
    "202s",
    "process p50/p99 ms",
    "all final",
    "completion p50 s",
    "completion p99 s",
    "requests",
    "req/1,000 items",
    "provider batches",
    "429s pace/storm",
    "max in 1 s",
    "ledger",
]


def _row(r: dict[str, Any]) -> list[Any]:
    return [
        r["case"],
        str(r["rep"]),
        f"{r['accepted']}/{r['calls']}",
        f"{stats.ms(r['process_p50_s'])}/{stats.ms(r['process_p99_s'])}",
        _final(r),
        _s(r["completion_p50_s"], 2),
        _s(r["completion_p99_s"], 2),
        r["requests"],
        _s(r["requests_per_1000_items"], 1) + (" (so far)" if r["timed_out"] else ""),
        r["provider_batches"],
        f"{r['rejected_429_pace']}/{r['rejected_429_storm']}",
        f"{r['max_in_any_window']}/{r['rps']}",
        _ledger(r),
    ]


def report(case: Case, runs: list[dict[str, Any]], reference: dict[str, Any] | None) -> dict[str, Any]:
    m = _median(runs)
    size = f"{case.employers} employers x {case.workers} workers"
    if case.big_workers:
        size = f"one {case.big_workers:,}-worker payroll clicked {case.big_lead_s:.0f} s before {size}"
    quick = f" (--quick stand-in for {case.stands_for})" if case.label != case.stands_for else ""
    stats.table(
        f"{NAME} {case.label}{quick}: {size}, INTASEND_MAX_RPS = SIM_MAX_RPS = {case.rps}, "
        f"SIM_PROCESSING_S={PROCESSING_S:g}, one dispatcher; times from the clicks (database clock)",
        HEADERS,
        [_row(r) for r in runs] + ([_row(m)] if len(runs) > 1 else []),
    )

    label = case.label
    targets: list[tuple[str, str, str, bool | None, str]] = []  # figure, measured, target, ok, note

    def add(figure: str, measured: str, target: str = "", ok: bool | None = None, note: str = "") -> None:
        targets.append((figure, measured, target, ok, note))

    if case.kind == "small":
        add(
            "every payroll final, from the clicks",
            _final(m),
            f"<= {ALL_FINAL_100_S:g} s (100 x 10)",
            (not m["timed_out"]) and m["all_final_s"] <= ALL_FINAL_100_S,
        )
    elif case.kind == "many":
        add(
            "every payroll final, from the clicks",
            _final(m),
            f"<= {ALL_FINAL_1000_S:g} s (1,000 x 10)",
            (not m["timed_out"]) and m["all_final_s"] <= ALL_FINAL_1000_S,
            note=(
                f"{m['unfinished']} of {case.employers} payrolls not final when stopped"
                if m["timed_out"]
                else ""
            ),
        )
        add(
            "provider requests per 1,000 items",
            _s(m["requests_per_1000_items"], 1) + (" (so far)" if m["timed_out"] else ""),
            f"<= {REQUESTS_PER_1000_ITEMS:g}",
            m["requests_per_1000_items"] <= REQUESTS_PER_1000_ITEMS,
            note=f"{m['requests']} requests for {m['items_sent'] if m['timed_out'] else case.items:,} "
            + ("items past PENDING so far (requests still due for them)" if m["timed_out"] else "items"),
        )
    else:
        ref_p99 = reference["completion_p99_s"] if reference else math.nan
        # no ratio when the case alone did not finish (its p99 is not known) or has not run
        known = ref_p99 is not None and math.isfinite(ref_p99) and ref_p99 > 0
        ratio = m["completion_p99_s"] / ref_p99 if known else math.nan
        add(
            "small payrolls' p99 completion with the big one / without",
            _ratio(ratio),
            f"<= {BIG_RATIO:g}x",
            None if math.isnan(ratio) else ratio <= BIG_RATIO,
            note=f"{_s(m['completion_p99_s'], 2)} s vs {_s(ref_p99, 2)} s ({case.reference})"
            if known
            else f"no ratio: {case.reference} did not finish or did not run",
        )
        m["ratio_vs_alone"], m["reference_p99_s"] = ratio, ref_p99
        add("the big payroll final, from its own click", _s(m["big_final_s"], 2) + " s")
        add("every payroll final, from the small ones' clicks", _final(m))
    if case.kind != "many":
        add(
            "per-payroll completion p50 / p99",
            f"{_s(m['completion_p50_s'], 2)} / {_s(m['completion_p99_s'], 2)} s",
        )
        add(
            "provider requests (per 1,000 items)",
            f"{m['requests']} ({_s(m['requests_per_1000_items'], 1)})",
            note=f"{case.items:,} items",
        )
    add(
        "upstream 429s (pace + storm, all runs)",
        str(m["rejected_429_pace"] + m["rejected_429_storm"]),
        "0",
        m["rejected_429_pace"] + m["rejected_429_storm"] == 0,
        note=f"most requests in any 1 s window {m['max_in_any_window']}/{case.rps}",
    )
    add(
        "ledger, item by item (testkit/ledger.py)",
        _ledger(m),
        "exact",
        None if m["ledger"] is None else m["ledger"]["ok"],
    )
    add(
        "process calls: 202s, p99 (own send -> answer)",
        f"{m['accepted']}/{case.employers}, {stats.ms(m['process_p99_s'])} ms",
        note=f"p50 {stats.ms(m['process_p50_s'])} ms, max {stats.ms(m['process_max_s'])} ms",
    )
    add("provider requests by endpoint (run 1)", json.dumps(runs[0]["by_endpoint"], sort_keys=True))
    stats.table(
        f"{NAME} {case.label}: against the targets{quick}",
        ["figure", "measured", "target", "", "note"],
        [[f, v, t, "" if ok is None else ("met" if ok else "MISSED"), n] for f, v, t, ok, n in targets],
    )
    for figure, measured, target, ok, note in targets:
        if figure.startswith("provider requests by endpoint"):
            continue
        registry.record(NAME, f"{label}: {figure}", measured, "", target, ok, note)
    return m


async def run(opts: registry.Options) -> list[dict[str, Any]]:
    medians: dict[str, dict[str, Any]] = {}
    for case in cases(opts):
        reps = 1 if case.once else opts.reps()
        runs = [await run_case(opts, case, rep) for rep in range(1, reps + 1)]
        registry.DETAILS.setdefault(NAME, {})[case.label] = runs
        medians[case.label] = report(case, runs, medians.get(case.reference or ""))

    def one(m: dict[str, Any]) -> str:
        text = f"{m['case']}: all final {_final(m)}"
        if m["big_workers"]:
            text += (
                f", small p99 {_s(m['completion_p99_s'], 2)} s = {_ratio(m.get('ratio_vs_alone'))} alone"
                f" ({_s(m.get('reference_p99_s'), 2)} s), "
                f"big final {_s(m['big_final_s'], 1)} s after its click"
            )
        else:
            text += f", completion p50/p99 {_s(m['completion_p50_s'], 2)}/{_s(m['completion_p99_s'], 2)} s"
        return (
            text
            + f", {m['requests']} requests = {_s(m['requests_per_1000_items'], 1)}/1,000 items"
            + (" (so far)" if m["timed_out"] else "")
            + f", {m['rejected_429_pace'] + m['rejected_429_storm']} 429s (max {m['max_in_any_window']}/"
            f"{m['rps']} in 1 s), ledger {_ledger(m)}, process p99 {stats.ms(m['process_p99_s'])} ms"
        )

    registry.summary(f"{NAME}: " + "; ".join(one(m) for m in medians.values()))
    return list(medians.values())
