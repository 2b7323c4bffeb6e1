"""Soak: 300 report runs created, awaited and downloaded through the hook while about a fifth of
all requests to the simulator fail in every way it knows. Afterwards exactly 300 runs exist, each
downloaded file is byte-identical to what Stripe serves, and no temporary file is left anywhere.

Workers are threads, one hook each (as tasks would have), sharing the process-wide rate limiter.
A caller that still gets an error after the client's own retries does what an Airflow task retry
does: tries again, with the same idempotency key for the same logical create.

The fault draws come from the simulator's seeded generator (``REPORTRUNS_SOAK_SEED``) in
request-arrival order, so a rerun with the same seed meets the same sequence of draws. Which
request meets which draw depends on that order: with ``REPORTRUNS_SOAK_THREADS=1`` it is fixed up
to timing (how often a pending run is polled, how many 409s a retried create meets while a stalled
one holds its key); with threads it also depends on scheduling. Every request the simulator saw is
written to ``soak-requests.jsonl`` in the test's tmp dir (named in the summary) for the post-mortem.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from airflow_provider_reportruns.client import StripeError
from airflow_provider_reportruns.hooks.stripe import StripeReportingHook, check_report_run
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator

T = TypeVar("T")

RUNS = 300
SEED = int(os.environ.get("REPORTRUNS_SOAK_SEED", "20240601"))
THREADS = int(os.environ.get("REPORTRUNS_SOAK_THREADS", "8"))
# Which request meets which fault; rates are per request of any kind, so together about 20 % of
# all requests fail. 429s are rare on purpose: each one holds every worker back for a second.
FAULT_RATES: dict[str, float] = {
    "500": 0.03,
    "502": 0.02,
    "503": 0.02,
    "reset": 0.03,
    "lost_response": 0.025,
    "bad_json": 0.02,
    "truncated_json": 0.02,
    "cut_download": 0.03,
    "slow": 0.01,
    "429": 0.006,
    "429_should_retry_true": 0.003,
    "429_should_retry_false": 0.003,
    "500_should_retry_false": 0.005,
}
SLOW_DELAY = 1.5  # seconds the server stalls on a "slow" fault ...
CLIENT_TIMEOUT = 1.0  # ... longer than the client waits
REPORT_TYPES = ("balance.summary.1", "payouts.summary.1", "balance_change_from_activity.itemized.1")
BASE = 1672531200  # 2023-01-01 UTC
CALLER_ATTEMPTS = 25  # a task's retries, generously


def _run_delay(report_type: str, parameters: Any, seq: int) -> float:
    # Most runs finish at once; every fourth stays pending a little, so waiting polls too.
    return 0.3 if seq % 4 == 0 else 0.0


def _parameters(i: int) -> dict[str, Any]:
    """Distinct parameters per logical run: runs can be told apart by what they report on."""
    start = BASE + i * 3600
    return {"interval_start": start, "interval_end": start + 86400, "currency": "usd"}


class _Soak:
    def __init__(self, sim: StripeSimulator, conn_id: str, destination: Path) -> None:
        self.sim = sim
        self.conn_id = conn_id
        self.destination = destination
        self._local = threading.local()
        self._hooks: list[StripeReportingHook] = []
        self._lock = threading.Lock()
        self.caller_retries: collections.Counter[str] = collections.Counter()

    @property
    def hook(self) -> StripeReportingHook:
        hook = getattr(self._local, "hook", None)
        if hook is None:
            hook = StripeReportingHook(self.conn_id, timeout=CLIENT_TIMEOUT, initial_backoff=0.05)
            self._local.hook = hook
            with self._lock:
                self._hooks.append(hook)
        return hook

    def _again(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, tried again like a task retry when it fails in a way that may pass."""
        for attempt in range(CALLER_ATTEMPTS):
            try:
                return call()
            except StripeError as exc:
                passing = exc.transient or exc.partial_download or exc.http_status in (429, 500, 502, 503)
                if not passing or attempt == CALLER_ATTEMPTS - 1:
                    raise
                with self._lock:
                    self.caller_retries[what] += 1
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def one(self, i: int) -> tuple[int, str, str]:
        """Create (one idempotency key for the logical create), wait, download; like the DAG does."""
        report_type = REPORT_TYPES[i % len(REPORT_TYPES)]
        key = f"soak-{SEED}-{i}"
        run = self._again(
            "create", lambda: self.hook.create_report_run(report_type, _parameters(i), idempotency_key=key)
        )
        run_id = run["id"]
        while not check_report_run(run):
            time.sleep(0.05)
            run = self._again("retrieve", lambda: self.hook.get_report_run(run_id))
        path = self._again(
            "download", lambda: self.hook.download_report_run(run, self.destination / f"{i:03d}-{run_id}.csv")
        )
        return i, run_id, path

    @property
    def client_requests(self) -> int:
        return sum(h.client.request_count for h in self._hooks)

    @property
    def client_retries(self) -> int:
        return sum(h.client.retry_count for h in self._hooks)


def test_soak_300_runs_through_faults_lose_nothing_duplicate_nothing_leave_no_part_files(
    tmp_path, airflow_conn, record_testsuite_property
) -> None:
    faults = [Fault("any", name, rate=rate, delay=SLOW_DELAY) for name, rate in FAULT_RATES.items()]
    destination = tmp_path / "reports"
    started = time.monotonic()
    with StripeSimulator(seed=SEED, run_delay=_run_delay, faults=faults) as sim:
        airflow_conn(
            "stripe_soak",
            conn_type="stripe",
            host=sim.url,
            password=sim.api_key,
            extra={"max_requests_per_second": 1000},
        )
        soak = _Soak(sim, "stripe_soak", destination)
        with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="soak") as pool:
            results = list(pool.map(soak.one, range(RUNS)))
        elapsed = time.monotonic() - started
        time.sleep(SLOW_DELAY + 0.2)  # let stalled handlers finish, so the request log is complete
        requests = sim.requests()
        runs = sim.report_runs()
        fault_counts = sim.fault_counts
        contents = {run_id: sim.result_content(run_id) for _, run_id, _ in results}

    request_log = tmp_path / "soak-requests.jsonl"
    with request_log.open("w") as log:
        for r in requests:
            entry = {"seq": r.seq, "kind": r.kind, "status": r.status, "fault": r.fault, "replayed": r.replayed}
            log.write(json.dumps({**entry, "run_id": r.run_id, "key": r.headers.get("Idempotency-Key")}) + "\n")

    files = sorted(p for p in destination.iterdir())
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.name.endswith(".part")]
    faulted = sum(fault_counts.values())
    by_parameters = collections.Counter((r["report_type"], tuple(sorted(r["parameters"].items()))) for r in runs)
    duplicates = {k: n for k, n in by_parameters.items() if n > 1}
    identical = sum(Path(path).read_bytes() == contents[run_id] for _, run_id, path in results)
    summary = (
        f"soak seed={SEED} threads={THREADS}: {len(requests)} requests, {faulted} faulted "
        f"({faulted / max(len(requests), 1):.1%}): "
        + ", ".join(f"{name} {count}" for name, count in sorted(fault_counts.items()))
        + f"; client retries {soak.client_retries} (of {soak.client_requests} attempts), "
        f"caller retries {dict(sorted(soak.caller_retries.items()))}; "
        f"runs {len(runs)} (duplicates {len(duplicates)}), files {len(files)} ({identical} byte-identical), "
        f"leftovers {len(leftovers)}; {elapsed:.1f} s; request log {request_log}"
    )
    print(summary)
    record_testsuite_property("soak", summary)

    assert len(runs) == RUNS, summary
    assert not duplicates, f"{summary}\nduplicated: {duplicates}"
    assert sorted(r["id"] for r in runs) == sorted(run_id for _, run_id, _ in results), summary
    assert len({run_id for _, run_id, _ in results}) == RUNS, summary
    assert len(files) == RUNS and identical == RUNS, summary
    assert leftovers == [], f"{summary}\n{leftovers}"
    # The soak proves something only if it really was a bad day, in every way the simulator knows.
    assert 0.15 <= faulted / len(requests) <= 0.30, summary
    assert set(fault_counts) == set(FAULT_RATES), summary
