"""pytest fixtures for testing DAGs against the local Stripe Reporting simulator.

Registered as the ``reportruns_simulator`` pytest11 entry point, so it loads in every pytest run
of an environment where this provider is installed: it imports nothing beyond pytest at import
time and starts the simulator only inside the fixtures.

``stripe_simulator`` is a started :class:`~airflow_provider_reportruns.testing.StripeSimulator`;
``stripe_simulator_connection`` also points ``AIRFLOW_CONN_STRIPE_DEFAULT`` at it. Pass
constructor arguments with a marker::

    @pytest.mark.stripe_simulator(run_delay=0.5, fail_report_types=["payouts.itemized.3"])
    def test_my_dag(stripe_simulator_connection): ...
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_reportruns.testing.simulator import StripeSimulator

CONNECTION_ENV = "AIRFLOW_CONN_STRIPE_DEFAULT"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stripe_simulator(**kwargs): keyword arguments for the StripeSimulator of the stripe_simulator fixture",
    )


@pytest.fixture
def stripe_simulator_factory() -> Iterator[Callable[..., StripeSimulator]]:
    """A factory ``(**kwargs) -> started StripeSimulator``; every simulator it made stops afterwards."""
    from airflow_provider_reportruns.testing.simulator import StripeSimulator

    started: list[StripeSimulator] = []

    def make(**kwargs: Any) -> StripeSimulator:
        simulator = StripeSimulator(**kwargs).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in reversed(started):
        simulator.stop()


@pytest.fixture
def stripe_simulator(
    request: pytest.FixtureRequest, stripe_simulator_factory: Callable[..., StripeSimulator]
) -> StripeSimulator:
    """A started simulator (arguments from the ``stripe_simulator`` marker), stopped after the test."""
    marker = request.node.get_closest_marker("stripe_simulator")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    return stripe_simulator_factory(**kwargs)


@pytest.fixture
def stripe_simulator_connection(stripe_simulator: StripeSimulator, monkeypatch: pytest.MonkeyPatch) -> StripeSimulator:
    """The ``stripe_simulator``, with ``AIRFLOW_CONN_STRIPE_DEFAULT`` pointing at it for the test."""
    conn = {"conn_type": "stripe", "password": stripe_simulator.api_key, "host": stripe_simulator.url}
    monkeypatch.setenv(CONNECTION_ENV, json.dumps(conn))
    return stripe_simulator
