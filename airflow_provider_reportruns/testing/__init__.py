"""Local Stripe Reporting API simulator for tests, demos and benchmarks.

``StripeSimulator`` serves report runs, report types and result files on a loopback port;
``Fault`` scripts failures into it. The names load lazily (PEP 562) because the pytest plugin
lives in this package and pytest imports it in every run: merely collecting tests should not
pay for an HTTP server module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_reportruns.testing.simulator import Fault, SimulatorRequest, StripeSimulator

__all__ = ["Fault", "SimulatorRequest", "StripeSimulator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from airflow_provider_reportruns.testing import simulator

        return getattr(simulator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
