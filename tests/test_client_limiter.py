"""RateLimiter: pacing, the 1-second cap and the 429 hold-back, in threads and event loops.

The limits that matter are counted where Stripe counts them: at the server (the simulator's
arrival times), with 429s injected by the simulator.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from _client import busiest_second, simulator_process

from airflow_provider_reportruns.client import RateLimiter, StripeReportingClient


def test_rate_limiter_never_admits_more_than_rate_starts_per_second_across_threads():
    limiter = RateLimiter(50)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 80
    assert busiest_second(starts) <= 50 * (1 - RateLimiter.HEADROOM)
    # Pacing: after a burst of RateLimiter.BURST, one start every 1/50 s.
    starts.sort()
    assert starts[-1] - starts[0] >= (79 - (RateLimiter.BURST - 1)) / (50 * (1 - RateLimiter.HEADROOM)) - 0.05


def test_rate_limiter_lets_a_short_burst_start_without_pacing():
    limiter = RateLimiter(20)
    assert [limiter.reserve() for _ in range(RateLimiter.BURST)] == [0.0] * RateLimiter.BURST
    assert limiter.reserve() > 0.0


def test_penalty_holds_back_every_async_waiter():
    limiter = RateLimiter(1000)
    limiter.penalize(0.3)
    started = time.monotonic()

    async def main() -> None:
        await asyncio.gather(*(limiter.acquire_async() for _ in range(5)))

    asyncio.run(main())
    assert time.monotonic() - started >= 0.29


def test_penalty_holds_back_a_waiter_that_already_reserved_its_slot():
    limiter = RateLimiter(1000)
    assert limiter.reserve() == 0.0  # paced before the 429 ...
    limiter.penalize(0.3)
    started = time.monotonic()
    limiter.wait_for_window()  # ... but not yet on the wire: it waits too
    assert time.monotonic() - started >= 0.29


@pytest.mark.parametrize("rate", [0, -1, True, "5"])
def test_rate_limiter_refuses_what_is_not_a_positive_number(rate):
    with pytest.raises(ValueError, match=f"max_requests_per_second must be a positive number, got {rate!r}"):
        RateLimiter(rate)


def test_concurrent_async_waits_stay_under_the_limit_at_the_server_despite_429s():
    rate = 10
    faults = [{"kind": "retrieve", "fault": "429", "rate": 0.15, "times": 15}]
    with simulator_process(faults, run_delay=3600.0, seed=11) as (url, api_key, run_id, arrivals):
        client = StripeReportingClient(
            api_key, api_base=url, max_requests_per_second=rate, max_retries=10, initial_backoff=0.05
        )

        async def main() -> list[dict[str, object]]:
            return await asyncio.gather(*(client.arequest("get_report_run", run_id) for _ in range(150)))

        runs = asyncio.run(asyncio.wait_for(main(), 120))
        seen = arrivals()

    assert [run["id"] for run in runs] == [run_id] * 150
    assert len([status for _, status in seen if status == 429]) == 15
    assert busiest_second([timestamp for timestamp, _ in seen]) <= rate


def test_threads_on_the_sync_client_stay_under_the_limit_at_the_server_despite_429s():
    rate = 10
    faults = [{"kind": "retrieve", "fault": "429", "rate": 0.2, "times": 6}]
    with simulator_process(faults, run_delay=3600.0, seed=11) as (url, api_key, run_id, arrivals):
        client = StripeReportingClient(
            api_key, api_base=url, max_requests_per_second=rate, max_retries=10, initial_backoff=0.05
        )
        failures: list[BaseException] = []

        def poll() -> None:
            try:
                for _ in range(6):
                    client.get_report_run(run_id)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=poll) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seen = arrivals()

    assert failures == []
    statuses = [status for _, status in seen]
    assert (statuses.count(429), statuses.count(200)) == (6, 48)
    assert busiest_second([timestamp for timestamp, _ in seen]) <= rate
