"""The report run a task asks for: its parameters, checked before any request, and the inputs of
its idempotency key."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_reportruns._compat import Context
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError

__all__ = ["RunRequest", "build_parameters", "permanent", "reuse_lookback_seconds"]


@dataclass(frozen=True)
class RunRequest:
    """One report run to create, and the inputs of its idempotency key.

    :param stripe_conn_id: the Airflow connection (a key per connection: two accounts never share).
    :param report_type: Stripe's report type id.
    :param parameters: Stripe's ``parameters``, interval included.
    :param task_try: ``(dag_id, run_id, task_id, map_index, try_number)`` of the task try.
    """

    stripe_conn_id: str
    report_type: str
    parameters: dict[str, Any]
    task_try: tuple[Any, ...] = field(default=())

    @classmethod
    def for_task(
        cls, stripe_conn_id: str, report_type: str, parameters: Mapping[str, Any], context: Context
    ) -> RunRequest:
        ti = context["ti"]
        task_try = (ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1), ti.try_number)
        return cls(stripe_conn_id, report_type, dict(parameters), task_try)

    def idempotency_key(self, failed_run_ids: tuple[str, ...] = (), *, after_data_wait: bool = False) -> str:
        """Same task try + same parameters + same failed runs seen → same key.

        :param after_data_wait: Stripe keeps the "data not available" answer under the key of
            the create that got it: the create after waiting for the data needs a key of its own.
        """
        from airflow_provider_reportruns.client import canonical_json

        material = canonical_json(
            {
                "conn": self.stripe_conn_id,
                "report_type": self.report_type,
                "parameters": self.parameters,
                "failed": sorted(failed_run_ids),
                "ti": list(self.task_try),
                **({"after_data_wait": True} if after_data_wait else {}),
            }
        )
        return "airflow-reportruns-" + hashlib.sha256(material.encode()).hexdigest()[:40]


def permanent(message: str) -> StripeReportingError:
    """The error for a bad argument: fails the task on its first try, before any request."""
    from airflow_provider_reportruns.hooks.stripe import StripeReportingPermanentError

    return StripeReportingPermanentError(message)


def reuse_lookback_seconds(value: Any) -> float:
    """``reuse_lookback`` as seconds: a positive ``timedelta`` or number of seconds.

    :raises ValueError: naming the argument and what it got.
    """
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(
            f"reuse_lookback must be a positive timedelta or number of seconds (default 7 days), got {value!r}."
        )
    return float(seconds)


def build_parameters(
    report_type: Any,
    parameters: Any,
    *,
    interval_start: Any,
    interval_end: Any,
    context: Context,
) -> dict[str, Any]:
    """Stripe's ``parameters`` for this DAG run: the given ones plus the resolved interval.

    A bad argument (no report type, parameters that are not a mapping, a naive datetime, an
    empty or reversed interval) raises :class:`StripeReportingPermanentError` before any request.
    """
    from airflow_provider_reportruns.intervals import resolve_interval

    if not isinstance(report_type, str) or not report_type.strip():
        raise permanent("report_type must be a non-empty string such as 'balance.summary.1'.")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise permanent(f"parameters must be a mapping, got {type(parameters).__name__}.")
    try:
        interval = resolve_interval(
            report_type,
            parameters=parameters,
            interval_start=interval_start,
            interval_end=interval_end,
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
        )
    except ValueError as exc:
        raise permanent(str(exc)) from None
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items() if v is not None}
    params.pop("interval_start", None)
    params.pop("interval_end", None)
    params.update(interval.as_parameters())
    return params
