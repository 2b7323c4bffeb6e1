"""Create Stripe report runs for a DAG run's interval, and download their result files."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns._compat import AirflowException, BaseOperator, default_deferrable, report_asset

if TYPE_CHECKING:
    from airflow_provider_reportruns._compat import Context
    from airflow_provider_reportruns.client import StripeError
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError, StripeReportingHook

__all__ = ["StripeCreateReportRunOperator", "StripeDownloadReportRunOperator"]

# For report types without an interval (payout_reconciliation.by_id.*), how far back to look for a
# run with the same parameters before creating one.
REUSE_LOOKBACK_SECONDS = 7 * 24 * 3600
# A deferral costs a trigger hand-off and a new worker slot to resume, seconds of scheduling at
# best; a first poll due sooner than this is taken in the worker.
INLINE_FIRST_POLL_SECONDS = 5.0
# How many recent runs of the report type the first poll's timing is taken from.
TYPICAL_RUNS = 10


def data_comes_later(exc: StripeError) -> bool:
    """Whether a create failed because Stripe has not prepared the interval's data *yet* ("…is only
    available through <time>"), as opposed to an interval before ``data_available_start``."""
    return exc.is_data_unavailable and "available through" in (exc.stripe_message or "")


def with_data_hint(exc: StripeReportingError, later: str | None = None) -> StripeReportingError:
    """Stripe's "data is only available …" refusal, with what to do about it (``later``: the advice
    when the data will come, if not the data sensor)."""
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError

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
    text = str(exc)
    suffix = f" (request {exc.request_id})" if exc.request_id else ""
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]  # keep the request id last, after the hint
    return StripeReportingError(
        f"{text} — {hint}{suffix}",
        http_status=exc.http_status,
        error_type=exc.error_type,
        code=exc.code,
        param=exc.param,
        stripe_message=exc.stripe_message,
        request_id=exc.request_id,
    )


def _duration(run: Mapping[str, Any]) -> float | None:
    """Seconds from a succeeded run's creation to its success (Stripe's whole-second stamps)."""
    created, succeeded = run.get("created"), run.get("succeeded_at")
    if run.get("status") != "succeeded" or not isinstance(created, int) or not isinstance(succeeded, int):
        return None
    return float(max(0, succeeded - created))


def _normalized(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters as Stripe echoes them: no ``None`` values, tuples as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items() if v is not None}


class StripeCreateReportRunOperator(BaseOperator):
    """Create a Stripe report run for the DAG run's data interval; return its id (XCom).

    **No duplicates on retry, clear or re-run.** Before creating, the operator lists the report
    runs created since the interval ended and reuses one with the same report type and parameters
    that is ``pending`` or ``succeeded``. A ``failed`` one is not reused. The create itself carries
    an ``Idempotency-Key`` derived from the task try and the failed runs seen, so HTTP retries,
    and a zombie and its replacement running the same try, make one run. The list lookup is what
    still holds after Stripe forgets idempotency keys (about 24 hours).

    :param report_type: e.g. ``balance.summary.1`` (templated).
    :param parameters: other Stripe parameters: ``columns``, ``currency``, ``timezone``,
        ``reporting_category``, ``connected_account``, ``payout`` (templated).
    :param interval_start: aware datetime, ISO 8601 string or Unix seconds; defaults to the DAG
        run's data interval start (templated). Naive datetimes are refused.
    :param interval_end: likewise; defaults to the data interval end (templated).
    :param stripe_conn_id: the Airflow connection of the key.
    :param reuse_existing: reuse a pending or succeeded run with identical parameters.
    :param wait_for_completion: also wait for the run to finish (the run id is pushed to XCom
        under ``report_run_id`` before waiting, so a retry finds it).
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting.
    :param timeout: give up waiting after this many seconds (default 24 hours).
    """

    template_fields: Sequence[str] = ("report_type", "parameters", "interval_start", "interval_end")
    template_fields_renderers = {"parameters": "json"}
    ui_color = "#e9e3ff"

    def __init__(
        self,
        *,
        report_type: str,
        parameters: Mapping[str, Any] | None = None,
        interval_start: Any = None,
        interval_end: Any = None,
        stripe_conn_id: str = "stripe_default",
        reuse_existing: bool = True,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float = 24 * 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report_type = report_type
        self.parameters = parameters
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.stripe_conn_id = stripe_conn_id
        self.reuse_existing = reuse_existing
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)

    @cached_property
    def hook(self) -> StripeReportingHook:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        return StripeReportingHook(self.stripe_conn_id)

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        run = self._create_or_reuse(self.build_parameters(context), context)
        run_id: str = run["id"]
        if not self.wait_for_completion:
            return run_id

        context["ti"].xcom_push(key="report_run_id", value=run_id)
        return str(self._wait(run, context)["id"])

    def _create_or_reuse(self, params: Mapping[str, Any], context: Context) -> dict[str, Any]:
        run = self.find_reusable_run(params) if self.reuse_existing else None
        if run is not None:
            self.log.info(
                "Reusing Stripe report run %s (%s, status %s): same report type and parameters, "
                "so no new run is created.",
                run["id"],
                self.report_type,
                run.get("status"),
            )
            return run
        run = self._create(params, context)
        self.log.info("Created Stripe report run %s (%s) with parameters %s.", run["id"], self.report_type, params)
        return run

    def build_parameters(self, context: Context) -> dict[str, Any]:
        """Stripe's ``parameters`` for this DAG run: the given ones plus the resolved interval."""
        from airflow_provider_reportruns.intervals import resolve_interval

        if not isinstance(self.report_type, str) or not self.report_type.strip():
            raise AirflowException("report_type must be a non-empty string such as 'balance.summary.1'.")
        if self.parameters is not None and not isinstance(self.parameters, Mapping):
            raise AirflowException(f"parameters must be a mapping, got {type(self.parameters).__name__}.")
        try:
            interval = resolve_interval(
                self.report_type,
                parameters=self.parameters,
                interval_start=self.interval_start,
                interval_end=self.interval_end,
                data_interval_start=context.get("data_interval_start"),
                data_interval_end=context.get("data_interval_end"),
            )
        except ValueError as exc:
            raise AirflowException(str(exc)) from None
        params = _normalized(self.parameters)
        params.pop("interval_start", None)
        params.pop("interval_end", None)
        params.update(interval.as_parameters())
        return params

    def find_reusable_run(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The newest pending or succeeded run with this report type and exactly these parameters.

        Runs can only be created after their interval's data exists, so the search starts at
        ``interval_end`` (a week back for interval-less types). Failed runs seen on the way are
        remembered: a new run is then created with a different idempotency key. So is how long
        the newest succeeded runs of this report type took (the first poll's timing).
        """
        lower = params.get("interval_end")
        if not isinstance(lower, int):
            lower = int(time.time()) - REUSE_LOOKBACK_SECONDS
        self._failed_run_ids: list[str] = []
        self._recent_durations: list[float] = []
        pending: dict[str, Any] | None = None
        for run in self.hook.iter_report_runs(created={"gte": lower}):
            took = _duration(run)
            if (
                took is not None
                and run.get("report_type") == self.report_type
                and len(self._recent_durations) < TYPICAL_RUNS
            ):
                self._recent_durations.append(took)
            if run.get("report_type") != self.report_type or _normalized(run.get("parameters")) != params:
                continue
            status = run.get("status")
            if status == "succeeded":
                return run
            if status == "failed":
                self._failed_run_ids.append(run["id"])
            elif pending is None:
                pending = run
        return pending

    def idempotency_key(self, params: Mapping[str, Any], context: Context) -> str:
        """Same task try + same parameters + same failed runs seen → same key."""
        from airflow_provider_reportruns.client import canonical_json

        ti = context["ti"]
        material = canonical_json(
            {
                "conn": self.stripe_conn_id,
                "report_type": self.report_type,
                "parameters": params,
                "failed": sorted(getattr(self, "_failed_run_ids", [])),
                "ti": [ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1), ti.try_number],
                # Stripe keeps the "data not available" answer under the key of the create that got
                # it: the create after waiting for the data needs a key of its own.
                **({"after_data_wait": True} if getattr(self, "_data_waited", False) else {}),
            }
        )
        return "airflow-reportruns-" + hashlib.sha256(material.encode()).hexdigest()[:40]

    def _create(self, params: Mapping[str, Any], context: Context) -> dict[str, Any]:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingError

        try:
            return self.hook.create_report_run(
                self.report_type, params, idempotency_key=self.idempotency_key(params, context)
            )
        except StripeReportingError as exc:
            if exc.is_data_unavailable:
                raise with_data_hint(exc) from None
            raise

    # -- waiting ---------------------------------------------------------------------------------

    def first_poll_delay(self) -> float:
        """Seconds from the create to the first status poll.

        The status in hand is fresh (the create's answer, or the lookup's), so polling at once
        would ask again for what is already known: the first poll waits ``poll_interval``, or
        less when the median of the report type's recent runs (seen by the duplicate lookup)
        finished sooner. In a backfill of quick runs that poll finds the run done.
        """
        import statistics

        recent: list[float] = getattr(self, "_recent_durations", None) or []
        if not recent:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, statistics.median(recent)))

    def _wait(self, run: dict[str, Any], context: Context) -> dict[str, Any]:
        """The run once succeeded (raises when it failed or the wait timed out); polls after
        :meth:`first_poll_delay`, then every ``poll_interval``. Deferrable, the waiting runs in
        the triggerer and resumes in :meth:`execute_complete`, except for a first poll due within
        ``INLINE_FIRST_POLL_SECONDS``, which is cheaper to wait for here."""
        from airflow_provider_reportruns.hooks.stripe import check_report_run
        from airflow_provider_reportruns.sensors.report_run import describe_wait

        run_id: str = run["id"]
        deadline = time.time() + self.timeout
        delay = self.first_poll_delay()
        while not check_report_run(run):  # raises with Stripe's message when the run failed
            inline = delay < self.poll_interval and delay <= INLINE_FIRST_POLL_SECONDS
            if self.deferrable and not inline:
                from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger

                self.defer(
                    trigger=StripeReportRunTrigger(
                        report_run_id=run_id,
                        stripe_conn_id=self.stripe_conn_id,
                        poll_interval=self.poll_interval,
                        end_time=deadline,
                        first_poll_at=min(time.time() + delay, deadline),
                    ),
                    method_name="execute_complete",
                )
            if time.time() >= deadline:
                raise AirflowException(
                    f"Stripe report run {run_id} did not finish in time: last status {run.get('status')!r} "
                    f"after waiting {self.timeout:.0f} s."
                )
            self.log.info("%s; checking again in %.1f s.", describe_wait(run), delay)
            time.sleep(min(delay, max(deadline - time.time(), 0.0)))
            run = self.hook.get_report_run(run_id)
            delay = self.poll_interval
        self.log.info("Stripe report run %s succeeded.", run_id)
        return run

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger with the same status model as the polling path."""
        from airflow_provider_reportruns.triggers.events import report_run_from_event

        run = report_run_from_event(event, timeout_error=AirflowException)
        self.log.info("Stripe report run %s succeeded.", run["id"])
        return str(run["id"])


class StripeDownloadReportRunOperator(BaseOperator):
    """Stream a succeeded report run's result file to a local path or any object storage URI.

    ``destination`` is a local path or a URI that Airflow's ``ObjectStoragePath`` handles
    (``file://``, and ``s3://``, ``gs://``, … when that filesystem is installed). The bytes go to a
    temporary name beside the destination and are renamed into place only when their count matches
    Stripe's ``result.size``; a failed download leaves nothing at the destination. An expired file
    URL is refreshed by fetching the run again. Returns the destination.

    Unless ``outlets`` is given, the destination's fixed part (up to the first template) is declared
    as an outlet asset (a Dataset on Airflow 2), and each event carries the concrete ``uri``,
    ``report_run_id`` and ``size`` as extra, so downstream DAGs can be scheduled on the report.

    :param report_run_id: the run id, or the sensor's XCom dict with ``report_run_id`` (templated).
    :param destination: local path or URI (templated); ``{report_type}`` and ``{report_run_id}`` in it
        are replaced by the run's values, which names files apart when the task is mapped.
    :param stripe_conn_id: the Airflow connection of the key.
    """

    template_fields: Sequence[str] = ("report_run_id", "destination")
    ui_color = "#e9e3ff"

    def __init__(
        self,
        *,
        report_run_id: Any,
        destination: str,
        stripe_conn_id: str = "stripe_default",
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs and isinstance(destination, str):
            kwargs["outlets"] = [report_asset(_asset_uri(destination))]
        super().__init__(**kwargs)
        self.report_run_id = report_run_id
        self.destination = destination
        self.stripe_conn_id = stripe_conn_id

    @cached_property
    def hook(self) -> StripeReportingHook:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        return StripeReportingHook(self.stripe_conn_id)

    def execute(self, context: Context) -> str:
        from airflow_provider_reportruns.hooks.stripe import report_run_from_metadata

        given = self.report_run_id
        run_id = given.get("report_run_id") if isinstance(given, Mapping) else given
        if not isinstance(run_id, str) or not run_id:
            raise AirflowException(
                f"report_run_id must be a report run id (frr_…) or the report run sensor's XCom, got {given!r}."
            )
        # The sensor's XCom already holds the file's url and size: no need to GET the run again.
        has_file = isinstance(given, Mapping) and given.get("url") and given.get("report_type")
        run = self.hook.succeeded_report_run(report_run_from_metadata(given) if has_file else run_id)
        return download_result(self, self.hook, run, str(self.destination), context)


def download_result(
    operator: BaseOperator, hook: StripeReportingHook, run: Mapping[str, Any], destination: str, context: Context
) -> str:
    """Stream a succeeded run's result file to ``destination`` (path or URI, with the
    ``{report_type}``/``{report_run_id}`` tokens) and annotate the operator's outlet events.
    Shared by the download operator and the one-task ``StripeReportToStorageOperator``."""
    run_id = str(run["id"])
    destination = destination.replace("{report_type}", str(run.get("report_type"))).replace("{report_run_id}", run_id)
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


def _asset_uri(destination: str) -> str:
    """The fixed part of a (templated) destination as an asset URI: up to the first template,
    cut back to the last ``/``; local paths become ``file://`` URIs."""
    fixed = destination.split("{{", 1)[0].split("{report_", 1)[0]
    if fixed != destination:
        fixed = fixed.rsplit("/", 1)[0] + "/" if "/" in fixed else fixed
    if "://" not in fixed:
        import os

        fixed = "file://" + os.path.abspath(fixed or ".") + ("/" if fixed.endswith("/") else "")
    return fixed
