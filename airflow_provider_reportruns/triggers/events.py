"""How sensors and operators read a trigger's event: the deferrable half of the shared status model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["report_run_from_event"]


def report_run_from_event(event: Mapping[str, Any] | None, *, timeout_error: type[Exception]) -> dict[str, Any]:
    """The succeeded report run carried by a :class:`StripeReportRunTrigger` event.

    A failed run raises the same :class:`StripeReportRunFailed` as the poke path; a timeout raises
    ``timeout_error`` with the run id, last status and time waited; an error event raises
    :class:`StripeReportingError` with Stripe's message.
    """
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError, check_report_run

    if not event:
        raise StripeReportingError("The Stripe report run trigger ended without an event.")
    status = event.get("status")
    if status == "timeout":
        raise timeout_error(str(event.get("message")))
    if status == "error" or "report_run" not in event:
        raise StripeReportingError(str(event.get("message") or f"Unexpected trigger event {dict(event)!r}"))
    run = dict(event["report_run"])
    if not check_report_run(run):  # raises for "failed"
        raise StripeReportingError(f"Report run {run.get('id')} is not finished (status {run.get('status')!r}).")
    return run
