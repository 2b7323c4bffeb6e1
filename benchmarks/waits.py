"""Row 4: a thousand concurrent waits for report runs, as a triggerer runs them.

Three workers, one after the other, each against its own simulator with the same schedule:

* ``triggers``: N ``StripeReportRunTrigger(...).run()`` coroutines in one asyncio loop (what a
  triggerer does with N deferred tasks), plus a ticker coroutine that sleeps 10 ms at a time and
  records how late it wakes up: the longest event-loop stall. To explain a stall, the worker also
  records when garbage collections ran and when the triggers' connection lookups ran (each
  trigger's ``get_shared_client`` reads the connection in asgiref's one ``sync_to_async`` thread,
  which competes with the loop for the GIL).
* ``threads``: the baseline without deferral, N threads each calling ``StripeReportRunSensor.poke``
  every P seconds in one process.
* ``triggers`` again, with the worker calling ``gc.freeze()`` after its imports (rows 4f/4g): what
  the loop looks like when garbage collections no longer walk Airflow's import-time heap.

Both read the connection ``stripe_default`` from ``AIRFLOW_CONN_STRIPE_DEFAULT`` with
``max_requests_per_second`` = R, the client-side limit shared by everything in the process. The
client keeps ``RateLimiter.HEADROOM`` (5 %) under R, so it aims at 0.95 R starts per second; the
target is still the configured R, measured where it matters, at the simulator. The
parent creates the N runs only once the worker has imported Airflow and built its waits, then
sends it the run ids, so the schedule does not depend on import time. Run k (in creation order)
finishes ``lead + spread * ((k * 7919) mod N) / N`` seconds after it was created: finishes are
spread evenly but shuffled relative to the order the waits poll in.

From the simulator's request log: the busiest 1-second window of status requests. From
``sim.succeeded_at(run)`` and the worker's event times (same machine clock): the detection delay.
Peak RSS is the worker's ``VmHWM``: everything the process ever held, Airflow imports included.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    INTERVAL,
    REPORT_TYPE,
    Row,
    Worker,
    airflow_env,
    connection_json,
    failed_rows,
    median,
    percentile,
    window_counts,
)

RSS_TARGET_MB = 200.0
STALL_TARGET_MS = 100.0
SHUFFLE = 7919  # a prime: (k * SHUFFLE) mod N visits every slot once for N not a multiple of it
# Rows 4f/4g measure a triggerer-side change from outside: freezing the import-time heap after
# start-up (gc.freeze(), as Airflow's DAG processor manager already does), so that generation-2
# collections stop walking Airflow's ~165,000 import-time objects while the triggers run.


def run(sizes: Any, workdir: Path) -> list[Row]:
    from airflow_provider_reportruns.client import RateLimiter

    n, poll, rate = sizes.waits, sizes.waits_poll_seconds, sizes.waits_rate
    # What the limiter really lets through per second: the configured rate minus its headroom.
    paced = rate * (1.0 - RateLimiter.HEADROOM)
    if n / poll > paced:
        raise ValueError(
            f"{n} waits polling every {poll} s need {n / poll:.0f} requests/s, over the {paced:g}/s the client "
            f"paces to at the limit {rate:g}"
        )
    names = [
        ("4a", "1,000 waits: peak RSS, triggers (ref: threads)"),
        ("4b", "1,000 waits: busiest 1-s window of requests"),
        ("4c", "1,000 waits: p99 detection delay"),
        ("4d", "1,000 waits: median detection delay"),
        ("4e", "1,000 waits: longest event-loop stall"),
        ("4f", "1,000 waits with gc.freeze(): busiest 1-s window"),
        ("4g", "1,000 waits with gc.freeze(): longest stall"),
    ]
    measured: dict[str, dict[str, Any]] = {}
    try:
        for mode in ("triggers", "threads"):
            measured[mode] = _measure(mode, sizes, workdir / mode)
        measured["proposed"] = _measure("triggers", sizes, workdir / "proposed", gc_freeze=True)
    except Exception as exc:
        return failed_rows(names, "see README", f"{type(exc).__name__}: {exc}")

    ours, base, proposed = measured["triggers"], measured["threads"], measured["proposed"]
    label = f"{n:,} waits"
    conditions = (
        f"N={n}, P={poll:g} s, limit {rate:g} requests/s (the client paces to {paced:g}/s, "
        f"headroom {RateLimiter.HEADROOM:.0%}; N/P = {n / poll:.0f}/s)"
    )
    return [
        Row(
            "4a",
            f"{label}: peak RSS, triggers (ref: threads)",
            ours["peak_rss_mb"],
            base["peak_rss_mb"],
            "MB",
            None,
            f"≤ {RSS_TARGET_MB:.0f} MB",
            ours["peak_rss_mb"] <= RSS_TARGET_MB,
            note=(
                f"{conditions}; whole worker process incl. Airflow imports "
                f"({ours['rss_ready_mb']:.0f} MB before the waits started; threads: {base['rss_ready_mb']:.0f} MB)"
            ),
            details={"triggers": ours["summary"], "threads": base["summary"]},
        ),
        Row(
            "4b",
            f"{label}: busiest 1-s window of requests",
            ours["max_window"],
            base["max_window"],
            "req",
            None,
            f"≤ {rate:g} (limit); 0 windows over",
            ours["windows_over"] == 0 and ours["max_window"] <= rate,
            note=(
                f"at the simulator, against the configured limit {rate:g} (the client aims at {paced:g}); "
                f"windows over the limit: triggers {ours['windows_over']}, threads "
                f"{base['windows_over']}; busiest window by the client's own clock, at the rate limiter / at "
                f"the send: triggers {ours['max_window_at_limiter']} / {ours['max_window_at_send']}, threads "
                f"{base['max_window_at_limiter']} / {base['max_window_at_send']}; send → simulator timestamp "
                f"p99 {ours['transit_ms']['p99']:.1f} ms, max {ours['transit_ms']['max']:.1f} ms (triggers); "
                f"mean rate triggers {ours['mean_rate']:.0f}/s, threads {base['mean_rate']:.0f}/s; "
                f"status requests: triggers {ours['requests']:,}, threads {base['requests']:,}"
            ),
        ),
        Row(
            "4c",
            f"{label}: p99 detection delay",
            ours["p99_delay"],
            base["p99_delay"],
            "s",
            None,
            f"≤ P + 1 = {poll + 1:g} s",
            ours["p99_delay"] <= poll + 1 and ours["missed"] == 0,
            note=(
                f"from the run turning succeeded on the server to the trigger's event (threads: poke returning); "
                f"runs never seen finished: triggers {ours['missed']}, threads {base['missed']}"
            ),
        ),
        Row(
            "4d",
            f"{label}: median detection delay",
            ours["median_delay"],
            base["median_delay"],
            "s",
            None,
            "info (≈ P/2 expected)",
            None,
        ),
        Row(
            "4e",
            f"{label}: longest event-loop stall",
            ours["max_stall_ms"],
            None,
            "ms",
            None,
            f"≤ {STALL_TARGET_MS:.0f} ms",
            ours["max_stall_ms"] <= STALL_TARGET_MS,
            note=(
                f"lateness of a 10 ms ticker coroutine in the triggers' loop (p99 {ours['p99_stall_ms']:.1f} ms, "
                f"worst {ours['worst_stall_at_s']:.2f} s after the start); slowest garbage collection: generation "
                f"{ours['slowest_gc']['generation']}, {ours['slowest_gc']['ms']:.0f} ms at "
                f"{ours['slowest_gc']['at_s']:.2f} s, over the {ours['heap_objects_at_start']:,} objects Airflow's "
                f"imports left in the process; {_lookups_text(ours['lookups'])}; threads have no loop"
            ),
        ),
        Row(
            "4f",
            f"{label} with gc.freeze(): busiest 1-s window",
            proposed["max_window"],
            ours["max_window"],
            "req",
            None,
            f"≤ {rate:g} (limit); 0 windows over",
            None,
            note=(
                f"diagnostic: the triggers worker calls gc.freeze() after its imports (a triggerer-side change); "
                f"windows over: {proposed['windows_over']}; by the client's clock {proposed['max_window_at_send']}; "
                f"send → simulator p99 {proposed['transit_ms']['p99']:.1f} ms, max "
                f"{proposed['transit_ms']['max']:.1f} ms; p99 detection delay {proposed['p99_delay']:.1f} s; "
                "reference: 4b"
            ),
            details={"triggers": proposed["summary"]},
        ),
        Row(
            "4g",
            f"{label} with gc.freeze(): longest stall",
            proposed["max_stall_ms"],
            ours["max_stall_ms"],
            "ms",
            None,
            f"≤ {STALL_TARGET_MS:.0f} ms",
            None,
            note=(
                f"diagnostic, as 4f; slowest garbage collection {proposed['slowest_gc']['ms']:.0f} ms; "
                f"worst stall {proposed['worst_stall_at_s']:.2f} s after the start; "
                f"{_lookups_text(proposed['lookups'])}; reference: 4e"
            ),
        ),
    ]


def _measure(mode: str, sizes: Any, workdir: Path, gc_freeze: bool = False) -> dict[str, Any]:
    from airflow_provider_reportruns.client import StripeReportingClient
    from airflow_provider_reportruns.testing.simulator import StripeSimulator

    n, poll, rate = sizes.waits, sizes.waits_poll_seconds, sizes.waits_rate
    lead, spread = sizes.waits_lead_seconds, sizes.waits_spread_seconds

    def run_delay(report_type: str, parameters: Any, seq: int) -> float:
        return lead + spread * ((seq * SHUFFLE) % n) / n

    # Longest possible wait: creation, the last finish, one poll interval, queueing at the limit.
    budget = 30.0 + lead + spread + 3 * poll + n / rate
    with StripeSimulator(run_delay=run_delay) as sim:
        env = airflow_env(workdir / "home", connection=connection_json(sim.url, sim.api_key, rate))
        params = {
            "mode": mode,
            "n": n,
            "poll": poll,
            "budget": budget,
            "gc_freeze": gc_freeze,
        }
        worker = Worker("waits", params, workdir, env)
        try:
            worker.wait_ready(timeout=180)
            # Runs are created by a separate, unlimited client in this process: set-up, not measured.
            setup = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=100_000)
            run_ids = [setup.create_report_run(REPORT_TYPE, INTERVAL)["id"] for _ in range(n)]
            setup.close()
            sim.clear_requests()
            worker.send({"run_ids": run_ids})
            result = worker.finish(timeout=budget + 60)
        finally:
            worker.kill()
        served = [r for r in sim.requests() if r.kind == "retrieve"]
        finished_at = {run_id: sim.succeeded_at(run_id) for run_id in run_ids}

    starts = [r.timestamp for r in served]
    counts = window_counts(starts)
    delays = [result["events"][run_id] - finished_at[run_id] for run_id in run_ids if run_id in result["events"]]
    duration = (max(starts) - min(starts)) if len(starts) > 1 else 0.0
    client_side = {series: max(window_counts(result[series]), default=0) for series in ("limiter_starts", "sends")}
    transit = _transit_ms(result["sends"], result["sent_runs"], served)
    measured = {
        "transit_ms": transit,
        "max_window_at_limiter": client_side["limiter_starts"],
        "max_window_at_send": client_side["sends"],
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_ready_mb": result["rss_ready_mb"],
        "max_window": max(counts) if counts else 0,
        "windows_over": sum(1 for c in counts if c > rate),
        "requests": len(served),
        "mean_rate": len(served) / duration if duration else 0.0,
        "p99_delay": percentile(delays, 99.0),
        "median_delay": median(delays),
        "max_delay": max(delays) if delays else float("nan"),
        "missed": n - len(delays),
        "max_stall_ms": result.get("max_stall_ms", float("nan")),
        "p99_stall_ms": result.get("p99_stall_ms", float("nan")),
        "stalls_over_100ms": result.get("stalls_over_100ms"),
        "worst_stall_at_s": result.get("worst_stall_at_s"),
        "slowest_gc": result.get("slowest_gc"),
        "lookups": result.get("lookups"),
        "heap_objects_at_start": result["heap_objects_at_start"],
        "non_success_events": result["non_success"],
        "errors": [r.status for r in served if r.status is None or r.status >= 300][:10],
    }
    measured["summary"] = {k: v for k, v in measured.items()}
    return measured


def _lookups_text(lookups: dict[str, Any] | None) -> str:
    if not lookups or not lookups["count"]:
        return "no connection lookups recorded"
    return (
        f"{lookups['count']:,} connection lookups (one per trigger) ran {lookups['first_s']:.2f} to "
        f"{lookups['last_s']:.2f} s after the start, {lookups['busy_ms']:.0f} ms in all"
    )


def _transit_ms(sends: list[float], sent_runs: list[str], served: list[Any]) -> dict[str, float]:
    """From the client's send to the simulator's arrival timestamp, per request (matched by run id
    and occurrence): how much the path between them can bunch requests together."""
    sent: dict[tuple[str, int], float] = {}
    occurrences: collections.Counter[str] = collections.Counter()
    for at, run_id in zip(sends, sent_runs, strict=True):
        sent[(run_id, occurrences[run_id])] = at
        occurrences[run_id] += 1
    arrived: collections.Counter[str] = collections.Counter()
    delays = []
    for request in served:
        key = (request.run_id or "", arrived[request.run_id or ""])
        arrived[request.run_id or ""] += 1
        if key in sent:
            delays.append((request.timestamp - sent[key]) * 1000)
    return {
        "matched": len(delays),
        "p50": median(delays),
        "p99": percentile(delays, 99.0),
        "p999": percentile(delays, 99.9),
        "max": max(delays, default=float("nan")),
    }


# -- worker side ---------------------------------------------------------------------------------


def worker(params: dict[str, Any]) -> dict[str, Any]:
    import gc
    import importlib

    from benchmarks._common import peak_rss_mb, rss_mb, worker_ready

    n, poll, budget = params["n"], params["poll"], params["budget"]
    # Import what the waits need before saying ready: the schedule starts at the go message.
    importlib.import_module("airflow_provider_reportruns.hooks.stripe")
    waits = "triggers.report_run" if params["mode"] == "triggers" else "sensors.report_run"
    importlib.import_module(f"airflow_provider_reportruns.{waits}")

    trace = _trace_starts()
    heap_objects = len(gc.get_objects())
    if params.get("gc_freeze"):  # rows 4f/4g: what the loop does if the process froze its import-time heap
        gc.collect()
        gc.freeze()
    ready_rss = rss_mb()
    run_ids: list[str] = worker_ready()["run_ids"]
    if len(run_ids) != n:
        raise ValueError(f"expected {n} run ids, got {len(run_ids)}")
    deadline = time.time() + budget
    if params["mode"] == "triggers":
        outcome = _run_triggers(run_ids, poll, deadline)
    else:
        outcome = _run_threads(run_ids, poll, deadline)
    return {
        **outcome,
        "peak_rss_mb": peak_rss_mb(),
        "rss_ready_mb": ready_rss,
        "heap_objects_at_start": heap_objects,
        **trace,
    }


def _trace_starts() -> dict[str, list[Any]]:
    """Record, on this machine's clock, when the rate limiter let a request start and when
    ``requests`` actually sent it, to tell client-side bunching from server-side timestamp jitter."""
    import requests

    from airflow_provider_reportruns.client import RateLimiter

    trace: dict[str, list[Any]] = {"limiter_starts": [], "sends": [], "sent_runs": []}
    try_start, send = RateLimiter._try_start, requests.Session.request

    def traced_try_start(self: RateLimiter) -> float:
        wait = try_start(self)
        if wait <= 0:
            trace["limiter_starts"].append(time.time())
        return wait

    def traced_send(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if "/report_runs/" in url:
            trace["sends"].append(time.time())
            trace["sent_runs"].append(url.rsplit("/", 1)[-1])
        return send(self, method, url, *args, **kwargs)

    RateLimiter._try_start = traced_try_start  # type: ignore[method-assign]
    requests.Session.request = traced_send  # type: ignore[method-assign]
    return trace


def _run_triggers(run_ids: list[str], poll: float, deadline: float) -> dict[str, Any]:
    import asyncio
    import gc

    import airflow_provider_reportruns.triggers.report_run as trigger_module
    from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger

    events: dict[str, float] = {}
    non_success: dict[str, str] = {}
    lateness: list[float] = []
    started = time.monotonic()
    worst = {"at": 0.0, "ms": 0.0}
    # Garbage-collector pauses hold the GIL and stop the loop: record them to explain stalls.
    collections_ms: list[tuple[int, float, float]] = []  # (generation, at s, ms)
    gc_started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started["t"] = time.monotonic()
        elif "t" in gc_started:
            now = time.monotonic()
            collections_ms.append((info["generation"], now - started, (now - gc_started.pop("t")) * 1000))

    gc.callbacks.append(on_gc)

    # Each trigger's first step looks its connection up (get_shared_client -> _client_for, run by
    # sync_to_async in one thread): record when those lookups ran and how long they took.
    lookup_spans: list[tuple[float, float]] = []
    client_for = trigger_module._client_for

    def timed_client_for(stripe_conn_id: str) -> Any:
        began = time.monotonic()
        try:
            return client_for(stripe_conn_id)
        finally:
            lookup_spans.append((began - started, time.monotonic() - started))

    trigger_module._client_for = timed_client_for  # type: ignore[assignment]

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
            late = loop.time() - before - 0.01
            lateness.append(late)
            if late * 1000 > worst["ms"]:
                worst.update(at=time.monotonic() - started, ms=late * 1000)

    async def main() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        triggers = [
            StripeReportRunTrigger(report_run_id=run_id, poll_interval=poll, end_time=deadline) for run_id in run_ids
        ]
        await asyncio.gather(*(wait_for(t) for t in triggers))
        stop.set()
        await tick

    try:
        asyncio.run(main())
    finally:
        gc.callbacks.remove(on_gc)
        trigger_module._client_for = client_for  # type: ignore[assignment]
    from benchmarks._common import percentile

    slowest_gc = max(collections_ms, key=lambda c: c[2], default=(None, 0.0, 0.0))

    return {
        "events": events,
        "non_success": non_success,
        "max_stall_ms": max(lateness) * 1000 if lateness else float("nan"),
        "p99_stall_ms": percentile(lateness, 99.0) * 1000,
        "stalls_over_100ms": sum(1 for late in lateness if late > 0.1),
        "worst_stall_at_s": worst["at"],
        "gc_collections": len(collections_ms),
        "slowest_gc": {"generation": slowest_gc[0], "at_s": slowest_gc[1], "ms": slowest_gc[2]},
        "lookups": {
            "count": len(lookup_spans),
            "first_s": min((a for a, _ in lookup_spans), default=0.0),
            "last_s": max((b for _, b in lookup_spans), default=0.0),
            "busy_ms": sum(b - a for a, b in lookup_spans) * 1000,
        },
    }


def _run_threads(run_ids: list[str], poll: float, deadline: float) -> dict[str, Any]:
    import threading

    from airflow_provider_reportruns._compat import PokeReturnValue
    from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor

    events: dict[str, float] = {}
    non_success: dict[str, str] = {}
    stop = threading.Event()

    sensors = [
        StripeReportRunSensor(task_id=f"wait_{index}", report_run_id=run_id, poke_interval=poll)
        for index, run_id in enumerate(run_ids)
    ]

    def watch(sensor: StripeReportRunSensor) -> None:
        run_id = str(sensor.report_run_id)
        try:
            while not stop.is_set() and time.time() < deadline:
                done = sensor.poke({})  # type: ignore[arg-type]
                if done is True or (isinstance(done, PokeReturnValue) and done.is_done):
                    events[run_id] = time.time()
                    return
                stop.wait(poll)
        except Exception as exc:  # a failed run or a Stripe error ends this wait, as it fails a task
            events[run_id] = time.time()
            non_success[run_id] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=watch, args=(sensor,), daemon=True) for sensor in sensors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.time()) + 5)
    stop.set()
    return {"events": events, "non_success": non_success}
