"""Per-account resources: clients of one account share a limiter and worker threads; a slow or
rate-limited account cannot delay another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from _client import INTERVAL, REPORT_TYPE

from airflow_provider_reportruns.client import StripeReportingClient, account_resources
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(run_delay=3600.0) as simulator:
        yield simulator


@pytest.fixture
def other_sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(run_delay=3600.0) as simulator:
        yield simulator


def test_clients_of_one_account_share_one_limiter_and_one_pool(sim):
    a = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=7)
    b = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=7)
    c = StripeReportingClient(sim.api_key, api_base=sim.url, stripe_account="acct_9", max_requests_per_second=7)
    assert a.rate_limiter is b.rate_limiter
    assert a.rate_limiter is not c.rate_limiter
    shared = account_resources(sim.url, sim.api_key, None, 7)
    assert shared.rate_limiter is a.rate_limiter
    assert shared.executor is account_resources(sim.url, sim.api_key, None, 7).executor
    assert shared.executor is not account_resources(sim.url, sim.api_key, "acct_9", 7).executor


def test_the_newest_configured_rate_wins_for_the_account(sim):
    a = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=7)
    StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=3)
    assert a.rate_limiter.rate == 3.0


def test_the_key_is_never_a_registry_key_in_clear(sim):
    from airflow_provider_reportruns.client import accounts

    StripeReportingClient(sim.api_key, api_base=sim.url)
    assert not any(sim.api_key in name for name in accounts._accounts)


def test_twenty_slow_waits_on_one_account_do_not_delay_a_wait_on_another(sim, other_sim):
    """20 waits on an account answering in 2 s delay a wait on another account by less than 0.5 s."""
    slow = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=1000)
    fast = StripeReportingClient(other_sim.api_key, api_base=other_sim.url, max_requests_per_second=1000)
    slow_run = slow.create_report_run(REPORT_TYPE, INTERVAL)["id"]
    fast_run = fast.create_report_run(REPORT_TYPE, INTERVAL)["id"]
    sim.add_fault(Fault("retrieve", "slow", delay=2.0))

    async def main() -> tuple[float, int]:
        slow_waits = [asyncio.ensure_future(slow.arequest("get_report_run", slow_run)) for _ in range(20)]
        await asyncio.sleep(0.3)  # every slow wait is on the wire or queued behind one
        started = time.monotonic()
        run = await fast.arequest("get_report_run", fast_run)
        took = time.monotonic() - started
        assert run["id"] == fast_run
        answered_meanwhile = sum(wait.done() for wait in slow_waits)
        await asyncio.gather(*slow_waits)
        return took, answered_meanwhile

    took, answered_meanwhile = asyncio.run(asyncio.wait_for(main(), 30))
    assert took < 0.5
    assert answered_meanwhile == 0, "the slow account answered first: nothing stood in the way"
