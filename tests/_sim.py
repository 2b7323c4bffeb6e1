"""Fixtures shared by this suite's modules: a running simulator and a connection pointing at it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_reportruns.testing.simulator import StripeSimulator

# Fast retries: the retry behaviour is what the tests prove, not the waiting.
FAST_BACKOFF = 0.01


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(run_delay=0.0) as simulator:
        yield simulator


@pytest.fixture
def stripe_conn(sim: StripeSimulator, airflow_conn: Callable[..., str]) -> StripeSimulator:
    """``stripe_default`` pointing at the simulator."""
    airflow_conn("stripe_default", conn_type="stripe", host=sim.url, password=sim.api_key)
    return sim


@pytest.fixture
def start_sim(airflow_conn: Callable[..., str]) -> Iterator[Callable[..., StripeSimulator]]:
    """Factory: a started simulator with these arguments, ``stripe_default`` pointing at it
    (``extra=`` sets the connection's extras); every simulator is stopped after the test."""
    started: list[StripeSimulator] = []

    def start(*, extra: dict[str, Any] | None = None, **kwargs: Any) -> StripeSimulator:
        simulator = StripeSimulator(**kwargs).start()
        started.append(simulator)
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key, extra=extra)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


@contextlib.contextmanager
def data_arrives_once_asked(simulator: StripeSimulator, end: int) -> Iterator[None]:
    """Move the end of available data to ``end`` once the report type has been read: the waiter
    saw the data missing at least once (a deferrable one really went through its trigger), and its
    next check finds it."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            if any(r.kind == "report_type" for r in simulator.requests(settle=0)):
                simulator.set_data_available_end(end)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


@pytest.fixture
def after_first() -> Iterator[Callable[[StripeSimulator, Callable[[Any], bool], float, Callable[[], None]], None]]:
    """``after_first(simulator, matches, seconds, action)``: run ``action`` that long after the first
    request ``matches`` accepts, however long the DAG took to get there."""
    stop = threading.Event()

    def watch(
        simulator: StripeSimulator, matches: Callable[[Any], bool], seconds: float, action: Callable[[], None]
    ) -> None:
        def loop() -> None:
            while not stop.wait(0.02):
                if any(matches(r) for r in simulator.requests(settle=0)):
                    if not stop.wait(seconds):
                        action()
                    return

        threading.Thread(target=loop, daemon=True).start()

    yield watch
    stop.set()
