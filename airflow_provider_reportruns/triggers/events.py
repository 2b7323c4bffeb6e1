"""How sensors and operators read a trigger's event: the deferrable half of the shared wait model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = ["error_event", "raise_for_error_event", "report_run_from_event"]


def error_event(exc: BaseException) -> dict[str, Any]:
    """The event a trigger ends with on an error it does not wait through: the message and the
    error's kind (``permanent``, ``data_not_ready``, ``transient`` or ``None``), so the task
    raises the same class as the polling path would have."""
    from airflow_provider_reportruns.waiting import error_kind

    return {"status": "error", "message": str(exc), "error_kind": error_kind(exc)}


def raise_for_error_event(event: Mapping[str, Any] | None) -> NoReturn:
    """Raise what an ``error`` event (or a missing or unexpected one) stands for: the hook's
    class for the error's kind, so a permanent error fails the task without retries, as it does
    when the worker polls; :class:`StripeReportingError` for an error of no kind."""
    from airflow_provider_reportruns.hooks.stripe import AIRFLOW_ERROR_CLASSES, StripeReportingError
    from airflow_provider_reportruns.waiting import ERROR_KINDS_BY_NAME

    if not event:
        raise StripeReportingError("The Stripe trigger ended without an event.")
    message = str(event.get("message") or f"Unexpected trigger event {dict(event)!r}")
    kind = ERROR_KINDS_BY_NAME.get(str(event.get("error_kind")))
    error_class = AIRFLOW_ERROR_CLASSES.get(kind, StripeReportingError) if kind else StripeReportingError
    raise error_class(message)


def report_run_from_event(event: Mapping[str, Any] | None, *, timeout_error: type[Exception]) -> dict[str, Any]:
    """The succeeded report run carried by a :class:`StripeReportRunTrigger` event.

    A failed run raises the same :class:`StripeReportRunFailed` as the poke path; a timeout raises
    ``timeout_error`` with the run id, last status and time waited; an error event raises the
    class of its kind (see :func:`raise_for_error_event`).
    """
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError, check_report_run

    if event and event.get("status") == "timeout":
        raise timeout_error(str(event.get("message")))
    if not event or event.get("status") == "error" or "report_run" not in event:
        raise_for_error_event(event)
    run = dict(event["report_run"])
    if not check_report_run(run):  # raises for "failed"
        raise StripeReportingError(f"Report run {run.get('id')} is not finished (status {run.get('status')!r}).")
    return run
