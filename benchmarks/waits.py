"""Row 4: deferred waits for report runs in one triggerer, coalesced vs per-run polling.

Each case (:class:`~benchmarks._common.WaitCase`) runs twice, one worker after the other, each
against a fresh simulator with the same schedule:

* ``per_run`` (the reference, the provider's behaviour before coalescing): N
  ``StripeReportRunTrigger(..., coalesce=False)`` coroutines in one asyncio loop, each retrieving
  its own run every P seconds. Its connection's limit is set high enough for N/P requests per
  second (see :func:`reference_rate`), so what is measured is per-run polling, not the limiter.
* ``coalesced``: the same N triggers with ``coalesce=None``, the default (the connection's
  ``coalesce_waits``, on unless switched off): one poller per account lists the account's runs,
  100 to a page, and retrieves old stragglers by id. Its connection has Stripe's test-mode limit.

Both workers run N ``run()`` coroutines in one loop, as a triggerer does, plus a ticker coroutine
that sleeps 10 ms at a time and records how late it wakes: the longest event-loop stall. The parent
creates the runs only once the worker has imported Airflow, then sends it the run ids and creation
times, so the schedule does not depend on import time.

The mixed account (``other_runs``) moves the simulator's clock back while it creates runs, so that
their ``created`` lies in the past: the other runs evenly over ``other_hours``, the waited runs over
the last ``backfill_minutes`` of those, and one more waited run a day before the rest. Every waited
run still finishes ``lead + spread * …`` seconds after it was really created. The per-run
reference retrieves its runs by id and never lists, so its simulator holds the waited runs only:
creating 20,000 runs takes half a minute, and they cannot change a single request it sends.

Measured at the simulator (its request log): requests per poll cycle (coalesced: a cycle starts at
a list request without a cursor; per-run: consecutive P-second windows), per completed wait, per
second (mean, busiest 1-s window). From ``sim.succeeded_at(run)`` and the worker's event times (same
machine clock): the detection delay. Peak RSS is the worker's ``VmHWM``: everything the process ever
held, Airflow's imports included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    INTERVAL,
    REPORT_TYPE,
    Row,
    WaitCase,
    Worker,
    airflow_env,
    connection_json,
    failed_rows,
    median,
    percentile,
    ratio,
    window_counts,
)

STALL_TARGET_MS = 100.0
SHUFFLE = 7919  # a prime: (k * SHUFFLE) mod N visits every slot once for N not a multiple of it
PAGE = 100  # runs per list page, Stripe's maximum
# Other runs finish this long after their (past) creation: all of them are history by the go.
OTHER_RUN_SECONDS = 1.0
DAY = 86400.0
MODES = ("per_run", "coalesced")
# Request-rate targets of the issue, per (N, P): mean requests per second of the coalesced waits.
RATE_TARGETS = {(1000, 30.0): 0.5, (5000, 30.0): 2.0}
# Stripe's live-mode read limit; the per-run reference gets more only when N/P needs more.
LIVE_RATE = 100.0


def reference_rate(waits: int, poll: float) -> float:
    """The per-run reference's client limit: Stripe's live-mode 100/s when N/P fits well under it,
    else twice N/P rounded up to a hundred, so that the limiter never sets the pace.

    :param waits: N.
    :param poll: P in seconds.
    """
    from airflow_provider_reportruns.client import RateLimiter

    need = waits / poll
    if need <= 0.9 * LIVE_RATE * (1.0 - RateLimiter.HEADROOM):
        return LIVE_RATE
    return math.ceil(2 * need / 100.0) * 100.0


def run(sizes: Any, workdir: Path) -> list[Row]:
    import concurrent.futures

    cases: list[WaitCase] = list(sizes.waits_cases)
    workers = len(cases) if sizes.waits_cases_together else 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        produced = pool.map(lambda case: _case_rows(case, sizes.waits_rate, workdir / f"case{case.key}"), cases)
        return [row for rows in produced for row in rows]


def _case_rows(case: WaitCase, rate: float, workdir: Path) -> list[Row]:
    n, poll = case.waits, case.poll_seconds
    label = f"{n:,} waits, P={poll:g} s" + (f", among {case.other_runs:,} other runs" if case.other_runs else "")
    cycle_target = math.ceil(n / PAGE) + 2
    names = [
        ("a", f"{label}: requests per poll cycle"),
        ("b", f"{label}: requests/s, mean"),
        ("c", f"{label}: busiest 1-s window of requests"),
        ("d", f"{label}: requests per completed wait"),
        ("e", f"{label}: median detection delay"),
        ("f", f"{label}: p99 detection delay"),
        ("g", f"{label}: peak RSS"),
        ("h", f"{label}: longest event-loop stall"),
    ]
    if case.old_run:
        names += [
            ("i", f"{label}: the run a day older, detection delay"),
            ("j", f"{label}: the run a day older, extra requests per cycle"),
        ]
    keyed = [(f"4.{case.key}{letter}", name) for letter, name in names]
    measured: dict[str, dict[str, Any]] = {}
    try:
        for mode in MODES:
            measured[mode] = _measure(case, mode, rate, workdir / mode)
    except Exception as exc:
        return failed_rows(keyed, "see README", f"{type(exc).__name__}: {exc}")
    ours, base = measured["coalesced"], measured["per_run"]
    text = dict(keyed)

    def row(
        letter: str,
        ours_value: float,
        base_value: float,
        unit: str,
        target: str,
        passed: bool | None,
        note: str = "",
        compare: bool = False,
    ) -> Row:
        key = f"4.{case.key}{letter}"
        return Row(
            key,
            text[key],
            ours_value,
            base_value,
            unit,
            ratio(ours_value, base_value) if compare else None,
            target,
            passed,
            note=note,
        )

    if case.other_runs:
        window_pages = math.ceil((n + ours["others_in_window"]) / PAGE)
        cycle_text, cycle_passed = f"info: the waits' window holds {window_pages} page{'s' * (window_pages != 1)}", None
    else:
        cycle_text, cycle_passed = f"≤ ⌈N/100⌉ + 2 = {cycle_target}", ours["max_cycle"] <= cycle_target
    rate_target = None if case.other_runs else RATE_TARGETS.get((n, poll))
    rows = [
        row(
            "a",
            ours["max_cycle"],
            base["max_cycle"],
            "req",
            cycle_text,
            cycle_passed,
            note=(
                f"coalesced (ours) at the limit {rate:g}/s (Stripe's test mode), per-run polling (reference) at "
                f"{base['rate']:g}/s ({_reference_note(n, poll, base['rate'])}); finishes spread over "
                f"{case.spread_seconds:g} s from {case.lead_seconds:g} s after creation; the busiest cycle: "
                f"coalesced {ours['cycles']} cycles (a cycle starts at a list request without a cursor), median "
                f"{ours['median_cycle']:g} requests, busiest P-second window {ours['max_p_window']}; per-run: "
                f"requests per P-second window, median {base['median_cycle']:g}; coalesced requests: "
                f"{ours['lists']:,} list pages, {ours['retrieves']:,} retrieves"
                + (
                    f"; mixed account: {case.other_runs:,} other runs created over {case.other_hours:g} h, the "
                    f"waited runs over its last {case.backfill_minutes:g} min ({ours['others_in_window']:,} other "
                    "runs among them), one waited run a day older"
                    if case.other_runs
                    else ""
                )
            ),
            compare=True,
        ),
        row(
            "b",
            ours["mean_rate"],
            base["mean_rate"],
            "req/s",
            f"≤ {rate_target:g} req/s" if rate_target is not None else "info",
            ours["mean_rate"] <= rate_target if rate_target is not None else None,
            note=f"all requests from the go to the last event ({ours['duration']:.0f} s coalesced, {base['duration']:.0f} s per-run)",
            compare=True,
        ),
        row(
            "c",
            ours["max_window"],
            base["max_window"],
            "req",
            f"≤ {rate:g} (the limit)",
            ours["max_window"] <= rate,
            note=f"at the simulator; per-run under its own limit {base['rate']:g}",
        ),
        row(
            "d",
            ours["per_wait"],
            base["per_wait"],
            "req",
            "info",
            None,
            note=(
                f"all requests / waits that ended with the run's event: coalesced {ours['requests']:,} / "
                f"{ours['completed']:,}, per-run {base['requests']:,} / {base['completed']:,}"
            ),
            compare=True,
        ),
        row("e", ours["median_delay"], base["median_delay"], "s", "info (≈ P/2 expected)", None),
        row(
            "f",
            ours["p99_delay"],
            base["p99_delay"],
            "s",
            f"≤ P + 1 = {poll + 1:g} s",
            ours["p99_delay"] <= poll + 1 and ours["missed"] == 0,
            note=(
                f"server finish → the trigger's event; max coalesced {ours['max_delay']:.1f} s, per-run "
                f"{base['max_delay']:.1f} s; waits without their run's event: coalesced {ours['missed']}, per-run "
                f"{base['missed']}; events other than succeeded: coalesced {len(ours['non_success'])}, per-run "
                f"{len(base['non_success'])}"
            ),
        ),
        row(
            "g",
            ours["peak_rss_mb"],
            base["peak_rss_mb"],
            "MB",
            f"≤ {case.rss_target_mb:.0f} MB",
            ours["peak_rss_mb"] <= case.rss_target_mb,
            note=(
                f"whole worker process incl. Airflow's imports ({ours['rss_ready_mb']:.0f} MB before the waits "
                f"started; per-run {base['rss_ready_mb']:.0f} MB)"
            ),
            compare=True,
        ),
        row(
            "h",
            ours["max_stall_ms"],
            base["max_stall_ms"],
            "ms",
            f"< {STALL_TARGET_MS:.0f} ms",
            ours["max_stall_ms"] < STALL_TARGET_MS,
            note=(
                f"lateness of a 10 ms ticker in the triggers' loop: p99 coalesced {ours['p99_stall_ms']:.1f} ms, "
                f"per-run {base['p99_stall_ms']:.1f} ms; slowest garbage collection coalesced "
                f"{ours['slowest_gc_ms']:.0f} ms, per-run {base['slowest_gc_ms']:.0f} ms"
            ),
        ),
    ]
    if case.old_run:
        rows += [
            row(
                "i",
                ours["old_delay"],
                base["old_delay"],
                "s",
                f"≤ P + 1 = {poll + 1:g} s",
                ours["old_delay"] <= poll + 1,
                note="from its finish on the server to its trigger's event",
            ),
            row(
                "j",
                ours["old_extra"],
                base["old_extra"],
                "req",
                "≤ 2",
                ours["old_extra"] <= 2,
                note=(
                    "busiest cycle's retrieves of that run plus list pages reaching past the other waits' "
                    f"oldest run (in all: coalesced {ours['old_requests']}, per-run {base['old_requests']})"
                ),
            ),
        ]
    for r in rows:
        r.details = {"coalesced": ours["summary"], "per_run": base["summary"]} if r.key.endswith("a") else {}
    return rows


def _reference_note(n: int, poll: float, rate: float) -> str:
    need = n / poll
    if rate <= LIVE_RATE:
        return f"N/P = {need:.0f}/s fits Stripe's live-mode limit"
    return f"N/P = {need:.0f}/s is over any Stripe limit; lifted so the limiter is not what is measured"


class _Plan:
    """The simulator's clock and run delays, set by the parent before each create it sends."""

    def __init__(self) -> None:
        self.shift = 0.0  # seconds added to the real clock
        self.delay = 0.0  # the next run's delay, from its (shifted) creation

    def clock(self) -> float:
        return time.time() + self.shift

    def run_delay(self, report_type: str, parameters: Any, seq: int) -> float:
        return self.delay


def _finish_after(case: WaitCase, k: int) -> float:
    """Seconds after its real creation that waited run ``k`` finishes."""
    n = case.waits
    return case.lead_seconds + case.spread_seconds * ((k * SHUFFLE) % n) / n


def _measure(case: WaitCase, mode: str, coalesced_rate: float, workdir: Path) -> dict[str, Any]:
    from airflow_provider_reportruns.client import StripeReportingClient
    from airflow_provider_reportruns.testing.simulator import StripeSimulator

    n, poll = case.waits, case.poll_seconds
    rate = coalesced_rate if mode == "coalesced" else reference_rate(n, poll)
    plan = _Plan()
    # Longest possible wait: the last finish, the poll after it, queueing at the limit, slack.
    budget = 30.0 + case.lead_seconds + case.spread_seconds + 3 * poll + (n + 1) / rate
    with StripeSimulator(run_delay=plan.run_delay, clock=plan.clock) as sim:
        env = airflow_env(workdir / "home", connection=connection_json(sim.url, sim.api_key, rate))
        params = {"mode": mode, "n": n + case.old_run, "poll": poll, "budget": budget}
        worker = Worker("waits", params, workdir, env)
        try:
            # Runs are created by a separate, unlimited client in this process: set-up, not measured.
            setup = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=100_000)

            def create(created_at: float | None, finishes_in: float) -> dict[str, Any]:
                """A run created at ``created_at`` (Unix s; ``None``: now) that finishes ``finishes_in``
                seconds from now (negative: finished already)."""
                plan.shift = 0.0 if created_at is None else created_at - time.time()
                plan.delay = finishes_in - plan.shift
                made: dict[str, Any] = setup.create_report_run(REPORT_TYPE, INTERVAL)
                return made

            anchor = time.time()
            others: list[dict[str, Any]] = []
            if mode == "coalesced" and case.other_runs:  # while the worker imports Airflow
                span = case.other_hours * 3600.0
                for j in range(case.other_runs):
                    created_at = anchor - span * (1 - j / case.other_runs)
                    others.append(create(created_at, created_at + OTHER_RUN_SECONDS - time.time()))
            worker.wait_ready(timeout=180)
            waited: list[dict[str, Any]] = []
            old: dict[str, Any] | None = None
            backfill = case.backfill_minutes * 60.0
            if case.old_run:
                # Mid-spread, off the shuffled slots of the others.
                old = create(anchor - backfill - DAY, case.lead_seconds + case.spread_seconds * 0.5 + 0.37)
            for k in range(n):
                created_at = anchor - backfill * (1 - k / n) if backfill else None
                waited.append(create(created_at, _finish_after(case, k)))
            plan.shift = 0.0
            setup.close()
            sim.clear_requests()
            runs = ([old] if old else []) + waited
            go_at = time.time()
            worker.send({"waits": [[r["id"], r["created"]] for r in runs]})
            result = worker.finish(timeout=budget + 60)
        finally:
            plan.shift = 0.0
            worker.kill()
        served = sim.requests()
        finished_at = {r["id"]: sim.succeeded_at(r["id"]) for r in runs}
    return _summarize(case, mode, rate, go_at, served, runs, others, old, finished_at, result)


def _summarize(
    case: WaitCase,
    mode: str,
    rate: float,
    go_at: float,
    served: Sequence[Any],
    runs: list[dict[str, Any]],
    others: list[dict[str, Any]],
    old: dict[str, Any] | None,
    finished_at: dict[str, float],
    result: dict[str, Any],
) -> dict[str, Any]:
    poll = case.poll_seconds
    events: dict[str, float] = result["events"]
    non_success: dict[str, str] = result["non_success"]
    ended = max(events.values(), default=go_at)
    duration = max(ended - go_at, 1e-9)
    starts = [r.timestamp for r in served]
    counts = window_counts(starts)
    lists = [r for r in served if r.kind == "list"]
    retrieves = [r for r in served if r.kind == "retrieve"]
    if mode == "coalesced" and not lists:
        raise RuntimeError("the coalesced waits sent no list request: is coalescing on by default?")
    created = {r["id"]: int(r["created"]) for r in (*runs, *others)}
    newer = [r for r in runs if old is None or r["id"] != old["id"]]
    oldest_newer = min((created[r["id"]] for r in newer), default=0)
    others_in_window = sum(1 for r in others if created[r["id"]] >= oldest_newer)

    p_windows = _p_windows(served, go_at, poll, ended)
    cycle_of = _cycle_index(served, go_at, poll, by_first_pages=mode == "coalesced")
    cycle_counts: dict[int, int] = {}
    old_extra: dict[int, int] = {}
    old_requests = 0
    for request, cycle in zip(served, cycle_of, strict=True):
        cycle_counts[cycle] = cycle_counts.get(cycle, 0) + 1
        if old is None:
            continue
        cursor = request.query.get("starting_after")
        reaching_back = (
            request.kind == "list" and cursor is not None and created.get(cursor, oldest_newer) < oldest_newer
        )
        if (request.kind == "retrieve" and request.run_id == old["id"]) or reaching_back:
            old_extra[cycle] = old_extra.get(cycle, 0) + 1
            old_requests += 1
    cycles = sorted(cycle_counts.values())
    completed = [run_id for run_id in events if run_id not in non_success]
    delays = [events[r["id"]] - finished_at[r["id"]] for r in newer if r["id"] in events]
    measured = {
        "rate": rate,
        "requests": len(served),
        "lists": len(lists),
        "retrieves": len(retrieves),
        "duration": duration,
        "mean_rate": len(served) / duration,
        "max_window": max(counts) if counts else 0,
        "windows_over": sum(1 for c in counts if c > rate),
        "cycles": len(cycles),
        "max_cycle": cycles[-1] if cycles else 0,
        "median_cycle": median(cycles),
        "max_p_window": max(p_windows, default=0),
        "per_wait": len(served) / len(completed) if completed else math.nan,
        "completed": len(completed),
        "p99_delay": percentile(delays, 99.0),
        "median_delay": median(delays),
        "max_delay": max(delays, default=math.nan),
        "missed": case.waits - len(delays),
        "others_in_window": others_in_window,
        "old_delay": events[old["id"]] - finished_at[old["id"]] if old and old["id"] in events else math.nan,
        "old_extra": max(old_extra.values(), default=0),
        "old_requests": old_requests,
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_ready_mb": result["rss_ready_mb"],
        "max_stall_ms": result["max_stall_ms"],
        "p99_stall_ms": result["p99_stall_ms"],
        "slowest_gc_ms": result["slowest_gc_ms"],
        "non_success": non_success,
        "errors": [r.status for r in served if r.status is None or r.status >= 300][:10],
    }
    # The slowest detections, with the requests that addressed those runs (seconds after the go):
    # whether the poll came late or its answer did.
    slowest = sorted((r["id"] for r in newer if r["id"] in events), key=lambda i: finished_at[i] - events[i])[:3]
    measured["slowest"] = [
        {
            "finished_s": round(finished_at[i] - go_at, 2),
            "event_s": round(events[i] - go_at, 2),
            "retrieves_s": [round(r.timestamp - go_at, 2) for r in retrieves if r.run_id == i],
        }
        for i in slowest
    ]
    measured["summary"] = {k: v for k, v in measured.items() if k != "non_success"}
    return measured


def _p_windows(served: Sequence[Any], go_at: float, poll: float, ended: float) -> list[int]:
    """Requests in each whole P-second window from the go to the last event."""
    whole = max(int((ended - go_at) // poll), 1)
    counts = [0] * whole
    for request in served:
        index = int((request.timestamp - go_at) // poll)
        if 0 <= index < whole:
            counts[index] += 1
    return counts


def _cycle_index(served: Sequence[Any], go_at: float, poll: float, by_first_pages: bool) -> list[int]:
    """Each request's poll cycle: for a poller, a list request without a cursor opens a cycle
    (requests before the first one belong to it); otherwise consecutive P-second windows."""
    first_pages = [r for r in served if r.kind == "list" and "starting_after" not in r.query]
    if not by_first_pages or not first_pages:
        return [int((r.timestamp - go_at) // poll) for r in served]
    cycle = 0
    indexes = []
    for request in served:
        if request.kind == "list" and "starting_after" not in request.query and request is not first_pages[0]:
            cycle += 1
        indexes.append(cycle)
    return indexes


# -- worker side ---------------------------------------------------------------------------------


def worker(params: dict[str, Any]) -> dict[str, Any]:
    import importlib

    from benchmarks._common import peak_rss_mb, rss_mb, worker_ready

    # Import what the waits need before saying ready: the schedule starts at the go message.
    importlib.import_module("airflow_provider_reportruns.hooks.stripe")
    importlib.import_module("airflow_provider_reportruns.triggers.report_run")
    ready_rss = rss_mb()
    waits: list[list[Any]] = worker_ready()["waits"]
    if len(waits) != params["n"]:
        raise ValueError(f"expected {params['n']} waits, got {len(waits)}")
    outcome = _run_triggers(waits, params["mode"], params["poll"], time.time() + params["budget"])
    return {**outcome, "peak_rss_mb": peak_rss_mb(), "rss_ready_mb": ready_rss}


def _run_triggers(waits: list[list[Any]], mode: str, poll: float, deadline: float) -> dict[str, Any]:
    import asyncio
    import gc

    from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger

    events: dict[str, float] = {}
    non_success: dict[str, str] = {}
    lateness: list[float] = []
    # Garbage-collector pauses hold the GIL and stop the loop: the slowest one explains a stall.
    collections_ms: list[float] = []
    gc_started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started["t"] = time.monotonic()
        elif "t" in gc_started:
            collections_ms.append((time.monotonic() - gc_started.pop("t")) * 1000)

    async def wait_for(trigger: StripeReportRunTrigger) -> None:
        async for event in trigger.run():
            events[trigger.report_run_id] = time.time()
            if event.payload.get("status") != "succeeded":
                non_success[trigger.report_run_id] = str(event.payload.get("status"))
            break

    async def ticker(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            lateness.append(loop.time() - before - 0.01)

    make = _trigger_factory(StripeReportRunTrigger, mode, poll)

    async def main() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        triggers = [make(run_id, created, deadline) for run_id, created in waits]
        await asyncio.gather(*(wait_for(t) for t in triggers))
        stop.set()
        await tick

    gc.callbacks.append(on_gc)
    try:
        asyncio.run(main())
    finally:
        gc.callbacks.remove(on_gc)
    return {
        "events": events,
        "non_success": non_success,
        "max_stall_ms": max(lateness) * 1000 if lateness else math.nan,
        "p99_stall_ms": percentile(lateness, 99.0) * 1000,
        "slowest_gc_ms": max(collections_ms, default=0.0),
    }


def _trigger_factory(trigger_class: Any, mode: str, poll: float) -> Callable[[str, int, float], Any]:
    """The trigger as the deferring code builds it, with the run's id and ``created``; ``coalesce``
    off for the reference, left to the connection (on by default) for the coalesced waits."""
    coalesce = False if mode == "per_run" else None

    def make(run_id: str, created: int, deadline: float) -> Any:
        return trigger_class(
            report_run_id=run_id, poll_interval=poll, end_time=deadline, coalesce=coalesce, created=created
        )

    return make
