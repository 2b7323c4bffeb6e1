"""Creating the report run, or reusing one; Stripe's refusals made actionable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns.operators.steps.request import RunRequest
from airflow_provider_reportruns.operators.steps.reuse import ReuseLookup, find_reusable_run

if TYPE_CHECKING:
    import logging

    from airflow_provider_reportruns.client import StripeError
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError, StripeReportingHook

__all__ = ["create_or_reuse", "create_run", "data_comes_later", "with_data_hint", "with_report_type_suggestion"]


def _rebuilt(exc: StripeError, message: str) -> Any:
    """``exc`` with another message, of the same class (so the same kind: retried or not)."""
    return type(exc)(
        message,
        http_status=exc.http_status,
        error_type=exc.error_type,
        code=exc.code,
        param=exc.param,
        stripe_message=exc.stripe_message,
        request_id=exc.request_id,
    )


def _before_request_id(exc: StripeError, addition: str) -> str:
    text = str(exc)
    suffix = f" (request {exc.request_id})" if exc.request_id else ""
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]  # keep the request id last, after the addition
    return f"{text}{addition}{suffix}"


def data_comes_later(exc: StripeError) -> bool:
    """Whether a create failed because Stripe has not prepared the interval's data *yet* ("…is only
    available through <time>"), as opposed to an interval before ``data_available_start``."""
    from airflow_provider_reportruns.client import StripeDataNotReadyError

    return isinstance(exc, StripeDataNotReadyError)


def with_data_hint(exc: StripeReportingError, later: str | None = None) -> StripeReportingError:
    """Stripe's "data is only available …" refusal, with what to do about it (``later``: the advice
    when the data will come, if not the data sensor). The error keeps its kind: data that comes
    later may be retried, an interval before ``data_available_start`` fails at once."""
    if data_comes_later(exc):
        hint = "Stripe has not prepared this interval's data yet (it refreshes about twice a day). " + (
            later
            or "Put a StripeReportDataAvailableSensor (airflow_provider_reportruns.sensors.report_type) "
            "ahead of this task instead of retrying it."
        )
    else:  # before data_available_start: no wait or retry will help
        hint = (
            "The interval lies before the first data Stripe has for this report type "
            "(data_available_start) and will never become available: start the interval, or the "
            "DAG's start_date, at or after that date."
        )
    rebuilt: StripeReportingError = _rebuilt(exc, _before_request_id(exc, f" — {hint}"))
    return rebuilt


def with_report_type_suggestion(hook: StripeReportingHook, exc: StripeReportingError, report_type: str) -> Any:
    """An unknown report type's refusal, naming the closest existing ones. Costs one report
    types request, made only then; if it fails too, the original error stands."""
    import difflib

    from airflow_provider_reportruns.client import StripeError

    try:
        known = [str(t.get("id")) for t in hook.list_report_types() if t.get("id")]
    except StripeError:
        return exc
    close = difflib.get_close_matches(report_type, known, n=3, cutoff=0.6)
    if not close:
        return exc
    names = " or ".join(f"`{name}`" for name in close)
    return _rebuilt(exc, _before_request_id(exc, f" — did you mean {names}?"))


def create_run(
    hook: StripeReportingHook,
    request: RunRequest,
    lookup: ReuseLookup,
    *,
    after_data_wait: bool = False,
) -> dict[str, Any]:
    """Create the run (``POST /v1/reporting/report_runs``) under its idempotency key. An unknown
    report type's error names the closest existing ones; other errors are raised as they came."""
    from airflow_provider_reportruns.hooks.stripe import StripeReportingPermanentError

    try:
        return hook.create_report_run(
            request.report_type,
            request.parameters,
            idempotency_key=request.idempotency_key(lookup.failed_run_ids, after_data_wait=after_data_wait),
        )
    except StripeReportingPermanentError as exc:
        if exc.param == "report_type":
            raise with_report_type_suggestion(hook, exc, request.report_type) from None
        raise


def create_or_reuse(
    hook: StripeReportingHook,
    request: RunRequest,
    *,
    reuse_existing: bool,
    lookback: float,
    log: logging.Logger | Any,
    after_data_wait: bool = False,
) -> tuple[dict[str, Any], ReuseLookup]:
    """A pending or succeeded run with these parameters if there is one, else a new run; and what
    the lookup found (for the first poll's timing)."""
    lookup = ReuseLookup()
    if reuse_existing:
        lookup = find_reusable_run(hook, request.report_type, request.parameters, lookback=lookback, log=log)
        if lookup.run is not None:
            log.info(
                "Reusing Stripe report run %s (%s, status %s): same report type and parameters, "
                "so no new run is created.",
                lookup.run["id"],
                request.report_type,
                lookup.run.get("status"),
            )
            return lookup.run, lookup
    run = create_run(hook, request, lookup, after_data_wait=after_data_wait)
    log.info(
        "Created Stripe report run %s (%s) with parameters %s.", run["id"], request.report_type, request.parameters
    )
    return run, lookup
