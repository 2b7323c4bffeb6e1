"""Create Stripe report runs for a DAG run's interval, and download their result files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns._compat import AirflowException, BaseOperator, default_deferrable, report_asset
from airflow_provider_reportruns.operators.steps.destination import asset_uri
from airflow_provider_reportruns.operators.steps.reuse import DEFAULT_REUSE_LOOKBACK

if TYPE_CHECKING:
    import datetime as dt

    from airflow_provider_reportruns._compat import Context
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook
    from airflow_provider_reportruns.operators.steps import (
        INLINE_FIRST_POLL_SECONDS,
        TYPICAL_RUNS,
        ReuseLookup,
        data_comes_later,
        download_result,
        with_data_hint,
    )

__all__ = [
    "INLINE_FIRST_POLL_SECONDS",
    "REUSE_LOOKBACK_SECONDS",
    "TYPICAL_RUNS",
    "StripeCreateReportRunOperator",
    "StripeDownloadReportRunOperator",
    "data_comes_later",
    "download_result",
    "with_data_hint",
]

# The default reuse_lookback in seconds (the name earlier versions exported).
REUSE_LOOKBACK_SECONDS = int(DEFAULT_REUSE_LOOKBACK.total_seconds())

# Names earlier versions exported from here; they live in operators.steps now and load on first
# use, so a DAG parse does not import the wait and reuse steps (and the client behind them).
_MOVED_TO_STEPS = (
    "INLINE_FIRST_POLL_SECONDS",
    "TYPICAL_RUNS",
    "ReuseLookup",
    "data_comes_later",
    "download_result",
    "with_data_hint",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_STEPS:
        from airflow_provider_reportruns.operators import steps

        return getattr(steps, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StripeCreateReportRunOperator(BaseOperator):
    """Create a Stripe report run for the DAG run's data interval; return its id (XCom).

    **No duplicates on retry, clear or re-run.** Before creating, the operator lists the report
    runs created since the interval ended (but no further back than ``reuse_lookback``) and
    reuses the newest one with the same report type and parameters that is ``pending`` or
    ``succeeded``. Parameters are compared as Stripe means them, not as it echoes them: currency
    in any case, whole numbers as ints or numeric strings, ``columns`` as an ordered list; a run
    of the same interval whose parameters differ is logged with what differed. A ``failed`` run
    is not reused. The create carries an ``Idempotency-Key`` derived from the task try and the
    failed runs seen, so HTTP retries, and a zombie and its replacement running the same try,
    make one run. The list lookup is what still holds after Stripe forgets idempotency keys
    (about 24 hours).

    **Errors.** A bad argument (naive datetime, empty or reversed interval, parameters that are
    not a mapping) and a request Stripe refuses for good (unknown report type, a parameter the
    type refuses, a rejected key) raise :class:`StripeReportingPermanentError`, an
    ``AirflowFailException``: the task fails on its first try, with no retries. An unknown report
    type's message names the closest existing ones (one report types request, made only then).
    Errors that may pass (no answer, 409, 429, 5xx after the client's own retries) keep Airflow's
    retries. While waiting (``wait_for_completion``), such errors are logged and the wait goes on
    until ``timeout``: a Stripe outage shorter than the timeout never fails the wait.

    :param report_type: e.g. ``balance.summary.1`` (templated).
    :param parameters: other Stripe parameters: ``columns``, ``currency``, ``timezone``,
        ``reporting_category``, ``connected_account``, ``payout`` (templated).
    :param interval_start: aware datetime, ISO 8601 string or Unix seconds; defaults to the DAG
        run's data interval start (templated). Naive datetimes are refused.
    :param interval_end: likewise; defaults to the data interval end (templated).
    :param stripe_conn_id: the Airflow connection of the key.
    :param reuse_existing: reuse a pending or succeeded run with the same parameters.
    :param reuse_lookback: how far back from now the reuse lookup lists runs, at most (a
        ``timedelta`` or seconds; default 7 days). A run created earlier is not reused, so the
        lookup's cost does not grow with the account's history.
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
        reuse_lookback: dt.timedelta | float = DEFAULT_REUSE_LOOKBACK,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float = 24 * 3600.0,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_reportruns.operators.steps import reuse_lookback_seconds

        super().__init__(**kwargs)
        self.report_type = report_type
        self.parameters = parameters
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.stripe_conn_id = stripe_conn_id
        self.reuse_existing = reuse_existing
        self.reuse_lookback = reuse_lookback_seconds(reuse_lookback)
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
        from airflow_provider_reportruns.hooks.stripe import StripeReportingError
        from airflow_provider_reportruns.operators.steps import (
            RunRequest,
            create_or_reuse,
            defer_run_wait,
            wait_for_run,
            with_data_hint,
        )

        request = RunRequest.for_task(self.stripe_conn_id, self.report_type, self.build_parameters(context), context)
        try:
            run, lookup = create_or_reuse(
                self.hook, request, reuse_existing=self.reuse_existing, lookback=self.reuse_lookback, log=self.log
            )
        except StripeReportingError as exc:
            if exc.is_data_unavailable:
                raise with_data_hint(exc) from None
            raise
        run_id: str = run["id"]
        if not self.wait_for_completion:
            return run_id

        context["ti"].xcom_push(key="report_run_id", value=run_id)
        done = wait_for_run(
            self.hook,
            run,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            first_delay=lookup.first_poll_delay(self.poll_interval),
            log=self.log,
            defer=defer_run_wait(self, run, stripe_conn_id=self.stripe_conn_id, poll_interval=self.poll_interval)
            if self.deferrable
            else None,
        )
        self.log.info("Stripe report run %s succeeded.", run_id)
        return str(done["id"])

    def build_parameters(self, context: Context) -> dict[str, Any]:
        """Stripe's ``parameters`` for this DAG run: the given ones plus the resolved interval."""
        from airflow_provider_reportruns.operators.steps import build_parameters

        return build_parameters(
            self.report_type,
            self.parameters,
            interval_start=self.interval_start,
            interval_end=self.interval_end,
            context=context,
        )

    def find_reusable_run(self, params: Mapping[str, Any]) -> ReuseLookup:
        """What the reuse lookup finds for these parameters (see :func:`steps.find_reusable_run`)."""
        from airflow_provider_reportruns.operators.steps import find_reusable_run

        return find_reusable_run(self.hook, self.report_type, params, lookback=self.reuse_lookback, log=self.log)

    def idempotency_key(self, params: Mapping[str, Any], context: Context, lookup: ReuseLookup | None = None) -> str:
        """The key a create of ``params`` in this task try carries (see :class:`RunRequest`).

        :param lookup: what the reuse lookup found; its failed runs change the key.
        """
        from airflow_provider_reportruns.operators.steps import RunRequest

        request = RunRequest.for_task(self.stripe_conn_id, self.report_type, params, context)
        return request.idempotency_key(lookup.failed_run_ids if lookup else ())

    def first_poll_delay(self, lookup: ReuseLookup | None = None) -> float:
        """Seconds from the create to the first status poll (see :meth:`ReuseLookup.first_poll_delay`)."""
        from airflow_provider_reportruns.operators.steps import ReuseLookup

        return (lookup or ReuseLookup()).first_poll_delay(self.poll_interval)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger with the same status model and errors as the polling path."""
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

    Unless ``outlets`` is given, the destination's fixed part (up to the first template or token) is declared
    as an outlet asset (a Dataset on Airflow 2), and each event carries the concrete ``uri``,
    ``report_run_id`` and ``size`` as extra, so downstream DAGs can be scheduled on the report.

    :param report_run_id: the run id, or the sensor's XCom dict with ``report_run_id`` (templated).
    :param destination: local path or URI (templated); ``{report_type}``, ``{report_run_id}``, any
        parameter of the run (``{payout}``, ``{currency}``, …) and ``{interval_start}`` /
        ``{interval_end}`` (UTC dates, ``2024-03-01``) are replaced by the run's values, which names
        files apart when the task is mapped. A token the run cannot fill fails the task without
        retries, naming the tokens available.
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
            kwargs["outlets"] = [report_asset(asset_uri(destination))]
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
        from airflow_provider_reportruns.operators.steps import (
            DESTINATION_TOKEN,
            RUN_TOKENS,
            download_result,
            permanent,
        )

        given = self.report_run_id
        run_id = given.get("report_run_id") if isinstance(given, Mapping) else given
        if not isinstance(run_id, str) or not run_id.startswith("frr_"):
            raise permanent(
                f"report_run_id must be a report run id (frr_…) or the report run sensor's XCom, got {given!r}."
            )
        # The sensor's XCom already holds the file's url and size: no need to GET the run again,
        # unless the destination names a parameter of the run, which only the run itself carries.
        needs_parameters = any(name not in RUN_TOKENS for name in DESTINATION_TOKEN.findall(str(self.destination)))
        has_file = isinstance(given, Mapping) and given.get("url") and given.get("report_type")
        use_metadata = has_file and not needs_parameters
        run = self.hook.succeeded_report_run(report_run_from_metadata(given) if use_metadata else run_id)
        return download_result(self, self.hook, run, str(self.destination), context)
