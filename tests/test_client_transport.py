"""The HTTP side: headers, idempotency keys, the key kept out of sight, arequest off the event loop.

Retry behaviour under a misbehaving server is proven in test_faults.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest
from _client import DAY, JAN_1, client  # noqa: F401

from airflow_provider_reportruns.client import StripeReportingClient
from airflow_provider_reportruns.testing.simulator import StripeSimulator


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator() as simulator:
        yield simulator


def test_every_post_carries_an_idempotency_key_and_the_callers_is_used(sim, client):
    client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + DAY})
    client.create_report_run(
        "balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + 2 * DAY}, idempotency_key="mine-1"
    )
    keys = [r.headers.get("Idempotency-Key") for r in sim.requests() if r.kind == "create"]
    assert keys[0] and len(keys[0]) >= 32
    assert keys[1] == "mine-1"


def test_same_idempotency_key_returns_the_same_run(sim, client):
    params = {"interval_start": JAN_1, "interval_end": JAN_1 + DAY}
    first = client.create_report_run("balance.summary.1", params, idempotency_key="k-1")
    second = client.create_report_run("balance.summary.1", params, idempotency_key="k-1")
    assert first["id"] == second["id"]
    assert len(sim.report_runs()) == 1


def test_headers_carry_account_and_version_but_never_log_the_key(sim):
    with StripeReportingClient(
        sim.api_key, api_base=sim.url, stripe_account="acct_123", api_version="2023-08-16"
    ) as client:
        client.list_report_types()
    (request,) = sim.requests()
    assert request.account == "acct_123"
    assert request.headers["Stripe-Version"] == "2023-08-16"
    assert sim.api_key not in repr(client)


def test_arequest_runs_the_call_off_the_event_loop(sim, client):
    async def main() -> tuple[list[dict], float]:
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(20):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        types = await client.arequest("list_report_types")
        await tick_task
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return types, max(gaps)

    types, worst_gap = asyncio.run(main())
    assert any(t["id"] == "balance.summary.1" for t in types)
    assert worst_gap < 0.1


def test_max_retries_must_be_a_whole_number():
    with pytest.raises(ValueError, match="max_retries must be a whole number >= 0, got -1"):
        StripeReportingClient("sk_test_x", max_retries=-1)


def test_user_agent_names_the_provider_then_requests(client):
    from airflow_provider_reportruns import __version__

    agent = client.session.headers["User-Agent"]
    assert isinstance(agent, str)
    assert agent.startswith(f"airflow-provider-reportruns/{__version__} python-requests/")
