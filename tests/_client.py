"""Helpers for the client's test modules: a client on the in-process simulator, and a simulator
in a process of its own for counting arrivals as Stripe would."""

from __future__ import annotations

import bisect
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_reportruns.client import StripeReportingClient
from airflow_provider_reportruns.testing.simulator import StripeSimulator

JAN_1 = 1704067200  # 2024-01-01T00:00:00Z
DAY = 86400
REPORT_TYPE = "balance.summary.1"
INTERVAL = {"interval_start": JAN_1, "interval_end": JAN_1 + DAY}


@pytest.fixture
def client(sim: StripeSimulator) -> Iterator[StripeReportingClient]:
    """A client on ``sim`` with no rate limit to speak of and 10 ms retries."""
    with StripeReportingClient(
        sim.api_key, api_base=sim.url, max_requests_per_second=1000, initial_backoff=0.01
    ) as stripe_client:
        yield stripe_client


def busiest_second(timestamps: list[float]) -> int:
    """The most timestamps within any half-open window of one second."""
    times = sorted(timestamps)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


# In this process the simulator's arrival times would wait for the GIL behind the client's
# threads, tens of ms late and unevenly so; in a process of its own they are what Stripe would see.
_SIMULATOR_PROCESS = """
import json, sys
from airflow_provider_reportruns.client import StripeReportingClient
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator
kwargs = json.loads(sys.argv[1])
faults = [Fault(**fault) for fault in kwargs.pop("faults", [])]
with StripeSimulator(**kwargs) as simulator:
    print(json.dumps([simulator.url, simulator.api_key]), flush=True)
    sys.stdin.readline()
    with StripeReportingClient(simulator.api_key, api_base=simulator.url) as setup:
        run_id = setup.create_report_run("balance.summary.1", {"interval_start": 1704067200, "interval_end": 1704153600})["id"]
    simulator.clear_requests()
    for fault in faults:
        simulator.add_fault(fault)
    print(json.dumps(run_id), flush=True)
    sys.stdin.readline()
    print(json.dumps([[r.timestamp, r.status] for r in simulator.requests()]), flush=True)
"""


@contextlib.contextmanager
def simulator_process(
    faults: list[dict[str, Any]], **kwargs: Any
) -> Iterator[tuple[str, str, str, Callable[[], list[tuple[float, int]]]]]:
    """A simulator in a child process holding one pending report run, with ``faults`` (``Fault``
    arguments) armed after the run was created. Yields ``(url, api_key, run_id, arrivals)``;
    ``arrivals()`` ends the process and returns ``(timestamp, status)`` of every request since."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SIMULATOR_PROCESS, json.dumps({**kwargs, "faults": faults})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    try:
        url, api_key = json.loads(stdout.readline())
        stdin.write("create\n")
        stdin.flush()
        run_id = json.loads(stdout.readline())

        def arrivals() -> list[tuple[float, int]]:
            out, _ = process.communicate("stop\n", timeout=30)
            return [(timestamp, status) for timestamp, status in json.loads(out)]

        yield url, api_key, run_id, arrivals
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
