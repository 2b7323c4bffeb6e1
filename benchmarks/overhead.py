"""Row 1: per-call overhead of create, retrieve and list, our hook vs Stripe's Python SDK.

One worker process holds both clients and makes the same calls to the same simulator (which
runs in the parent, so its CPU time is not the client's), alternating which client goes first
on every iteration. Both keep their connection alive (one ``requests`` session each) and the
simulator answers each response in one write (its Nagle fix), so loopback latency is not a 40 ms
delayed-ACK stall. The simulator records how long it spent on each request; matched to the calls
in order (they are strictly sequential), that time is subtracted to give the client's overhead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    INTERVAL,
    REPORT_TYPE,
    Row,
    airflow_env,
    connection_json,
    failed_rows,
    median,
    ratio,
    run_worker,
)

OPERATIONS = ("create", "retrieve", "list")
# Client-side limit for this row only: it is a production guard, not part of the per-call cost.
UNLIMITED_RATE = 1_000_000.0
LIST_LIMIT = 10


def run(sizes: Any, workdir: Path) -> list[Row]:
    from airflow_provider_reportruns.testing.simulator import StripeSimulator

    names = [(f"1{'abc'[i]}", f"{op} call overhead, hook vs stripe SDK") for i, op in enumerate(OPERATIONS)]
    target = "ratio ≤ 1.0"
    try:
        with StripeSimulator() as sim:
            env = airflow_env(workdir / "home", connection=connection_json(sim.url, sim.api_key, UNLIMITED_RATE))
            params = {"url": sim.url, "api_key": sim.api_key, "calls": sizes.overhead_calls, "warmup": 20}
            result = run_worker("overhead", params, workdir, env, timeout=120 + sizes.overhead_calls * 0.1)
            served = sim.requests()
    except Exception as exc:  # a row that cannot run still gets its lines in the table
        return failed_rows(names, target, f"{type(exc).__name__}: {exc}")

    calls = result["calls"]
    served = served[result["setup_requests"] :]
    matched = len(served) == len(calls) and all(
        s.kind == c["op"] and s.status is not None and s.status < 300 for s, c in zip(served, calls, strict=True)
    )
    rows = []
    for (key, name), op in zip(names, OPERATIONS, strict=True):
        latency: dict[str, list[float]] = {"ours": [], "sdk": []}
        overhead: dict[str, list[float]] = {"ours": [], "sdk": []}
        for index, call in enumerate(calls):
            if call["op"] != op or call["warmup"]:
                continue
            latency[call["impl"]].append(call["us"])
            if matched:
                overhead[call["impl"]].append(call["us"] - served[index].duration * 1e6)
        figures = overhead if matched else latency
        ours, sdk = median(figures["ours"]), median(figures["sdk"])
        r = ratio(ours, sdk)
        rows.append(
            Row(
                key,
                name,
                ours,
                sdk,
                "µs",
                r,
                target,
                r is not None and r <= 1.0,
                note=(
                    f"median of {len(figures['ours'])} calls each, interleaved; "
                    + ("simulator time subtracted" if matched else "end-to-end latency (could not match requests)")
                    + f"; our client's max_requests_per_second set to {UNLIMITED_RATE:,.0f} for this row"
                ),
                details={
                    "median_latency_us": {"ours": median(latency["ours"]), "sdk": median(latency["sdk"])},
                    "latency_ratio": ratio(median(latency["ours"]), median(latency["sdk"])),
                    "median_overhead_us": {"ours": median(overhead["ours"]), "sdk": median(overhead["sdk"])}
                    if matched
                    else None,
                    "median_server_us": median([s.duration * 1e6 for s in served if s.kind == op]),
                    "calls_per_client": len(latency["ours"]),
                    "stripe_sdk_version": result["stripe_version"],
                    "list_limit": LIST_LIMIT if op == "list" else None,
                },
            )
        )
    return rows


def worker(params: dict[str, Any]) -> dict[str, Any]:
    import stripe

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

    stripe.enable_telemetry = False  # no request-timing header on the next call: nothing to report
    hook = StripeReportingHook()
    sdk = stripe.StripeClient(
        params["api_key"],
        base_addresses={"api": params["url"], "files": params["url"]},
        max_network_retries=hook.client.max_retries,  # same retry budget: both send an Idempotency-Key
    )
    create_params = {"report_type": REPORT_TYPE, "parameters": {**INTERVAL, "currency": "usd"}}
    run_id = hook.create_report_run(REPORT_TYPE, {**INTERVAL, "currency": "usd"})["id"]
    sdk.v1.reporting.report_runs.retrieve(run_id)  # first SDK call builds its session: not timed
    operations = {
        "create": (
            lambda: hook.create_report_run(REPORT_TYPE, create_params["parameters"]),
            lambda: sdk.v1.reporting.report_runs.create(params=create_params),
        ),
        "retrieve": (
            lambda: hook.get_report_run(run_id),
            lambda: sdk.v1.reporting.report_runs.retrieve(run_id),
        ),
        "list": (
            lambda: hook.list_report_runs(limit=LIST_LIMIT),
            lambda: sdk.v1.reporting.report_runs.list(params={"limit": LIST_LIMIT}),
        ),
    }
    # The two set-up requests above are not in the log the parent matches against.
    calls: list[dict[str, Any]] = []
    clock = time.perf_counter_ns
    for op in OPERATIONS:
        ours, theirs = operations[op]
        for index in range(params["warmup"] + params["calls"]):
            order = (("ours", ours), ("sdk", theirs)) if index % 2 == 0 else (("sdk", theirs), ("ours", ours))
            for impl, call in order:
                started = clock()
                call()
                elapsed = clock() - started
                calls.append({"op": op, "impl": impl, "us": elapsed / 1000.0, "warmup": index < params["warmup"]})
    return {"calls": calls, "stripe_version": stripe.VERSION, "setup_requests": 2}
