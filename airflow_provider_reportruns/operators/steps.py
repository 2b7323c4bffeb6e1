"""The steps the report operators are composed of: build the request, find a run to reuse,
create one, wait for it, download its result file.

Each step takes what it needs as arguments and returns what it found; nothing is kept on the
operator. The create operator, the one-task operator (and any transfer built on them) run the
same steps in the same order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_reportruns.waiting import describe_run, poll_until, run_outcome

if TYPE_CHECKING:
    import logging

    from airflow_provider_reportruns._compat import BaseOperator, Context
    from airflow_provider_reportruns.client import StripeError
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError, StripeReportingHook

__all__ = [
    "DEFAULT_REUSE_LOOKBACK",
    "INLINE_FIRST_POLL_SECONDS",
    "ReuseLookup",
    "RunRequest",
    "asset_uri",
    "build_parameters",
    "create_or_reuse",
    "create_run",
    "data_comes_later",
    "destination_for",
    "download_result",
    "find_reusable_run",
    "normalized_parameters",
    "reuse_lookback_seconds",
    "wait_for_run",
    "with_data_hint",
]

# How far back the reuse lookup lists runs, at most: its cost must not grow with the account's
# history (a backfill of 2024 run today would otherwise page through every run since 2024).
DEFAULT_REUSE_LOOKBACK = dt.timedelta(days=7)
# A deferral costs a trigger hand-off and a new worker slot to resume, seconds of scheduling at
# best; a first poll due sooner than this is taken in the worker.
INLINE_FIRST_POLL_SECONDS = 5.0
# How many recent runs of the report type the first poll's timing is taken from.
TYPICAL_RUNS = 10
# ``{name}`` in a destination; ``{{ … }}`` is Jinja and was rendered before.
DESTINATION_TOKEN = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
RUN_TOKENS = ("report_type", "report_run_id")
INTERVAL_TOKENS = ("interval_start", "interval_end")


# -- values passed between steps ---------------------------------------------------------------


@dataclass(frozen=True)
class ReuseLookup:
    """What the reuse lookup found.

    :param run: the newest pending or succeeded run with the same report type and parameters.
    :param failed_run_ids: failed runs with those parameters: a new create gets a key of its own.
    :param recent_durations: seconds the newest succeeded runs of the report type took.
    """

    run: dict[str, Any] | None = None
    failed_run_ids: tuple[str, ...] = ()
    recent_durations: tuple[float, ...] = ()

    def first_poll_delay(self, poll_interval: float) -> float:
        """Seconds from the create to the first status poll.

        The status in hand is fresh (the create's answer, or the lookup's), so polling at once
        would ask again for what is already known: the first poll waits ``poll_interval``, or
        less when the median of the report type's recent runs finished sooner. In a backfill of
        quick runs that poll finds the run done.
        """
        import statistics

        if not self.recent_durations:
            return poll_interval
        return min(poll_interval, max(0.0, statistics.median(self.recent_durations)))


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


# -- arguments ---------------------------------------------------------------------------------


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


# -- reuse ---------------------------------------------------------------------------------------


def normalized_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters in the form two equal requests share, whatever Stripe echoes: no ``None``
    values, currency in lower case, whole numbers as ints (``"1709251200"`` == ``1709251200``),
    ``columns`` as an ordered list of strings (the order is the file's column order)."""
    normalized: dict[str, Any] = {}
    for key, value in (parameters or {}).items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = [str(item) for item in value]
        elif key == "currency" and isinstance(value, str):
            value = value.strip().lower()
        elif (isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip())) or (
            isinstance(value, float) and value.is_integer()
        ):
            value = int(value)
        normalized[str(key)] = value
    return normalized


def _differences(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}: {found.get(key)!r} instead of {wanted.get(key)!r}"
        for key in sorted(set(wanted) | set(found))
        if wanted.get(key) != found.get(key)
    ]


def _duration(run: Mapping[str, Any]) -> float | None:
    """Seconds from a succeeded run's creation to its success (Stripe's whole-second stamps)."""
    created, succeeded = run.get("created"), run.get("succeeded_at")
    if run_outcome(run) != "succeeded" or not isinstance(created, int) or not isinstance(succeeded, int):
        return None
    return float(max(0, succeeded - created))


def find_reusable_run(
    hook: StripeReportingHook,
    report_type: str,
    parameters: Mapping[str, Any],
    *,
    lookback: float,
    log: logging.Logger | Any,
    now: float | None = None,
) -> ReuseLookup:
    """The newest pending or succeeded run of ``report_type`` with the same parameters (compared
    in :func:`normalized_parameters` form), listed from ``created[gte]`` =
    ``max(interval_end, now - lookback)`` (``now - lookback`` for interval-less report types).

    Runs can only be created after their interval's data exists, so none older than
    ``interval_end`` can match; the lookback bounds the walk for old intervals, so a run older
    than it is not reused. A run of the same type and interval whose other parameters differ is
    logged with what differed.
    """
    now = time.time() if now is None else now
    floor = int(now - lookback)
    interval_end = parameters.get("interval_end")
    lower = max(interval_end, floor) if isinstance(interval_end, int) else floor
    wanted = normalized_parameters(parameters)
    interval = {key: wanted.get(key) for key in INTERVAL_TOKENS}
    failed: list[str] = []
    durations: list[float] = []
    pending: dict[str, Any] | None = None
    for run in hook.iter_report_runs(created={"gte": lower}):
        if run.get("report_type") != report_type:
            continue
        took = _duration(run)
        if took is not None and len(durations) < TYPICAL_RUNS:
            durations.append(took)
        found = normalized_parameters(run.get("parameters"))
        if found != wanted:
            if {key: found.get(key) for key in INTERVAL_TOKENS} == interval:
                log.info(
                    "Not reusing report run %s of %s for this interval: its parameters differ (%s).",
                    run.get("id"),
                    report_type,
                    "; ".join(_differences(wanted, found)),
                )
            continue
        outcome = run_outcome(run)
        if outcome == "succeeded":
            return ReuseLookup(run, tuple(failed), tuple(durations))
        if outcome == "failed":
            failed.append(str(run["id"]))
        elif pending is None:
            pending = run
    return ReuseLookup(pending, tuple(failed), tuple(durations))


# -- create --------------------------------------------------------------------------------------


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


# -- wait ----------------------------------------------------------------------------------------


def run_succeeded(run: Mapping[str, Any]) -> bool:
    """``True`` once succeeded, ``False`` while not finished; a failed run raises
    :class:`StripeReportRunFailed` with Stripe's message."""
    from airflow_provider_reportruns.hooks.stripe import check_report_run

    return check_report_run(run)


def run_timeout_message(run_id: str, last_status: Any, waited: float) -> str:
    return (
        f"Stripe report run {run_id} did not finish in time: last status {last_status!r} after waiting {waited:.0f} s."
    )


def wait_for_run(
    hook: StripeReportingHook,
    run: dict[str, Any],
    *,
    poll_interval: float,
    timeout: float,
    first_delay: float,
    log: logging.Logger | Any,
    defer: Callable[[float, float], NoReturn] | None = None,
) -> dict[str, Any]:
    """The run once succeeded; raises when it failed or the wait timed out.

    Polls after ``first_delay``, then every ``poll_interval``, waiting through Stripe outages
    until the deadline. With ``defer`` (``defer(first_poll_at, end_time)`` hands the wait to the
    triggerer and does not return), the wait defers, except for a first poll due within
    :data:`INLINE_FIRST_POLL_SECONDS`, which is cheaper to take here.
    """
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError

    run_id = str(run["id"])
    started = time.time()
    deadline = started + timeout
    if run_succeeded(run):
        return run
    inline = first_delay < poll_interval and first_delay <= INLINE_FIRST_POLL_SECONDS
    if defer is not None and not inline:
        defer(min(time.time() + first_delay, deadline), deadline)
    result = poll_until(
        lambda: hook.get_report_run(run_id),
        run_succeeded,
        deadline=started + (first_delay if defer is not None else timeout),
        first_delay=first_delay,
        interval=poll_interval,
        log=log,
        describe=describe_run,
        last=run,
    )
    if result.done and result.value is not None:
        return result.value
    if defer is not None:  # the inline first poll found it unfinished
        defer(min(time.time() + poll_interval, deadline), deadline)
    last = result.value or run
    raise StripeReportingError(run_timeout_message(run_id, last.get("status"), time.time() - started))


# -- download ------------------------------------------------------------------------------------


def destination_tokens(parameters: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``{name}`` tokens a destination may use for a run with these parameters."""
    names = [*RUN_TOKENS, *(key for key in INTERVAL_TOKENS if isinstance(parameters.get(key), int))]
    names += sorted(key for key in parameters if key not in INTERVAL_TOKENS and key not in names)
    return tuple(names)


def check_destination(destination: str, parameters: Mapping[str, Any]) -> None:
    """Refuse (permanently, before any request) a destination naming a token this run cannot fill."""
    available = destination_tokens(parameters)
    unknown = [name for name in DESTINATION_TOKEN.findall(destination) if name not in available]
    if unknown:
        raise permanent(
            f"The destination {destination!r} names {', '.join('{' + n + '}' for n in dict.fromkeys(unknown))}, "
            f"which this report run cannot fill; available: {', '.join('{' + n + '}' for n in available)}."
        )


def destination_for(destination: str, run: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> str:
    """``destination`` with its tokens replaced: ``{report_type}``, ``{report_run_id}``, any
    parameter of the run (``{payout}``, ``{currency}``, …) and ``{interval_start}`` /
    ``{interval_end}`` as UTC dates (``2024-03-01``).

    :param parameters: the run's parameters, when the run in hand does not carry them.
    """
    from airflow_provider_reportruns.intervals import utc_date

    params = dict(parameters if parameters is not None else run.get("parameters") or {})
    check_destination(destination, params)
    values: dict[str, str] = {"report_type": str(run.get("report_type")), "report_run_id": str(run.get("id"))}
    for key, value in params.items():
        if key in INTERVAL_TOKENS:
            value = utc_date(int(value))
        elif isinstance(value, (list, tuple)):
            value = "-".join(str(item) for item in value)
        values[key] = str(value)
    return DESTINATION_TOKEN.sub(lambda match: values[match.group(1)], destination)


def asset_uri(destination: str) -> str:
    """The fixed part of a (templated) destination as an asset URI: up to the first template or
    token, cut back to the last ``/``; local paths become ``file://`` URIs."""
    fixed = destination.split("{{", 1)[0]
    token = DESTINATION_TOKEN.search(fixed)
    if token is not None:
        fixed = fixed[: token.start()]
    if fixed != destination:
        fixed = fixed.rsplit("/", 1)[0] + "/" if "/" in fixed else fixed
    if "://" not in fixed:
        import os

        fixed = "file://" + os.path.abspath(fixed or ".") + ("/" if fixed.endswith("/") else "")
    return fixed


def download_result(
    operator: BaseOperator,
    hook: StripeReportingHook,
    run: Mapping[str, Any],
    destination: str,
    context: Context,
    parameters: Mapping[str, Any] | None = None,
) -> str:
    """Stream a succeeded run's result file to ``destination`` (path or URI, tokens replaced by
    :func:`destination_for`) and annotate the operator's outlet events."""
    run_id = str(run["id"])
    destination = destination_for(destination, run, parameters)
    size = (run.get("result") or {}).get("size")
    local = _local_path(destination)
    if local is not None:
        import os

        written = os.path.abspath(hook.download_report_run(run, local))
        # Hand back what was asked for: a file:// URI stays a URI, a path becomes absolute.
        result = destination if destination.startswith("file://") else written
    else:
        result = hook.with_fresh_result(run, lambda fresh: _download_to_object_storage(hook, fresh, destination))
    operator.log.info("Downloaded the result file of report run %s (%s bytes) to %s.", run_id, size, result)
    _annotate_outlets(operator, context, {"uri": result, "report_run_id": run_id, "size": size})
    return result


def _download_to_object_storage(hook: StripeReportingHook, run: Mapping[str, Any], destination: str) -> str:
    import uuid

    from airflow_provider_reportruns._compat import object_storage_path

    target = object_storage_path(destination)
    part = target.parent / f".{target.name}.{uuid.uuid4().hex}.part"
    file = run.get("result") or {}
    hook.client.download_atomically(
        file["url"],
        lambda: part.open("wb"),
        lambda: part.rename(target, overwrite=True),
        lambda: part.unlink(missing_ok=True),
        expected_size=file.get("size"),
        what=f"the result file of report run {run['id']}",
    )
    return destination


def _annotate_outlets(operator: BaseOperator, context: Context, extra: dict[str, Any]) -> None:
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    for outlet in operator.outlets or []:
        try:
            outlet_events[outlet].extra.update(extra)
        except Exception:  # an outlet of another kind (or an older Airflow) takes no extra
            operator.log.debug("Could not annotate outlet %r", outlet, exc_info=True)


def _local_path(destination: str) -> str | None:
    """The filesystem path for a plain path or ``file://`` URI; ``None`` for other schemes."""
    if destination.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(destination).path)
    if "://" in destination:
        return None
    return destination
