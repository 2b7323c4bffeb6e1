"""The HTTP server: request ids, keep-alive, many concurrent clients, stopping."""

from __future__ import annotations

import http.client
import threading
import time

import pytest
from _simulator_api import (  # noqa: F401
    TYPES,
    Api,
    FakeClock,
    api,
    assert_error,
    clock,
    sim,
)

from airflow_provider_reportruns.testing import StripeSimulator

# ------------------------------------------------------------------------------------ HTTP


def test_every_response_has_a_request_id_and_json_errors_for_unknown_urls(sim: StripeSimulator, api: Api) -> None:
    response = api.get("/v1/charges")
    assert_error(
        response,
        404,
        "Unrecognized request URL (GET: /v1/charges). Please see https://stripe.com/docs or we can help at "
        "https://support.stripe.com/.",
    )
    ids = {api.get(TYPES).headers["Request-Id"] for _ in range(3)}
    assert len(ids) == 3


def test_keep_alive_requests_do_not_stall(sim: StripeSimulator, api: Api) -> None:
    api.get(TYPES)
    started = time.perf_counter()
    for _ in range(50):
        assert api.get(f"{TYPES}/balance.summary.1").status_code == 200
    elapsed = time.perf_counter() - started
    # With Nagle's algorithm on, each response would wait ~40 ms for a delayed ACK: 2 s in all.
    assert elapsed < 1.5, f"50 keep-alive requests took {elapsed:.2f}s"
    assert len({r.client for r in sim.requests()}) == 1


def test_two_hundred_concurrent_keep_alive_clients(sim: StripeSimulator) -> None:
    clients, per_client = 200, 3
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        api = Api(sim)
        barrier.wait()
        got = [api.get(f"{TYPES}/payouts.summary.1").status_code for _ in range(per_client)]
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert statuses == [200] * clients * per_client
    assert len({r.client for r in sim.requests()}) == clients  # one kept-alive connection each
    assert elapsed < 8.0


def test_stop_drops_idle_keep_alive_connections(clock: FakeClock) -> None:
    sim = StripeSimulator(clock=clock).start()
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    conn.request("GET", TYPES, headers={"Authorization": f"Bearer {sim.api_key}"})
    assert conn.getresponse().read()
    sim.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", TYPES, headers={"Authorization": f"Bearer {sim.api_key}"})
        conn.getresponse()
    conn.close()
