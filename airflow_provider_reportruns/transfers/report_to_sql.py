"""Stripe's report to a database table, exactly once per interval, in one task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns._compat import AirflowException, BaseOperator, default_deferrable
from airflow_provider_reportruns.operators.steps.reuse import DEFAULT_REUSE_LOOKBACK

if TYPE_CHECKING:
    import datetime as dt

    from airflow_provider_reportruns._compat import Context
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook
    from airflow_provider_reportruns.operators.steps import RunRequest

__all__ = ["SQL_EXTRA_HINT", "StripeReportToSqlOperator"]

SQL_EXTRA_HINT = 'pip install "airflow-provider-reportruns[sql]"'
DEFAULT_BATCH_SIZE = 10_000


class StripeReportToSqlOperator(BaseOperator):
    """Create the DAG run's report run (or reuse one), wait for it, and stream its result file into
    a database table through any Airflow SQL connection, replacing the rows an earlier load of the
    same interval wrote.

    The create-or-reuse, the wait for Stripe's data and the wait for the run are the steps of
    :class:`~airflow_provider_reportruns.operators.report_to_storage.StripeReportToStorageOperator`,
    with its arguments, errors and deferral; only the last step differs.

    **Exactly once per interval.** A load is keyed by report type, parameters (normalized as the
    reuse lookup compares them; the interval and ``columns`` apart, as ``columns`` changes what a
    row shows, not which rows there are) and interval. In one transaction it deletes the
    rows of its key and writes the file's: a retry, a clear, a re-run or a backfill over loaded
    intervals never doubles a row, a load that fails part-way (the download cut off, a value the
    column type refuses) is rolled back and leaves the previous rows as they were, and loads with
    other parameters (two currencies, say) coexist in one table. Two loads of one key at the same
    time are serialized (PostgreSQL: a transaction-level advisory lock; SQLite: its write lock).

    **Columns.** The report's columns, under their own names (quoted: ``payment_metadata[key]``
    stays as it is), then five provenance columns that every row carries:

    - ``_report_run_id``: the Stripe report run the row was loaded from;
    - ``_report_type``: e.g. ``balance_change_from_activity.itemized.3``;
    - ``_report_parameters``: the run's parameters but the interval and ``columns``, as canonical
      JSON (``{"currency":"usd"}``; ``{}`` when none);
    - ``_interval_start``, ``_interval_end``: the interval (UTC; NULL for a report type without one).

    The last four are the load's key. On PostgreSQL and SQLite an index ``<table>_report_load`` on
    ``_interval_start`` lets a load find the rows it replaces without reading the whole table.

    **Types**, from the column's name (PostgreSQL / SQLite / other databases):

    - amounts (``gross``, ``fee``, ``net``, ``amount``, ``*_amount``): ``NUMERIC`` / ``NUMERIC`` /
      ``DECIMAL(38, 6)``, exact decimals in the currency's major unit, as in the file;
    - ``*_utc`` times: ``TIMESTAMPTZ`` (read as UTC) / ``TIMESTAMP`` / ``TIMESTAMP``;
    - their local-time twins (``created``, ``available_on``, ``effective_at``, …): ``TIMESTAMP``
      without time zone, the wall-clock time in the run's ``timezone`` parameter, as Stripe writes it;
    - ``*_date``: ``DATE``; counts (``count``, ``*_count``): ``BIGINT`` / ``INTEGER`` / ``BIGINT``;
    - everything else, ids included: ``TEXT``. An empty cell is NULL.

    SQLite has no exact decimal or time types: there the types are affinities (amounts are stored
    as SQLite numbers, times as the report's text, the interval as ``2024-03-01 00:00:00+00:00``). The table is created when missing; a report column the
    table lacks is added to it (``ALTER TABLE … ADD COLUMN``, logged), inside the load's
    transaction where the database allows it. Existing columns keep their types.

    **Speed.** PostgreSQL takes the file with ``COPY … FROM STDIN`` fed from the HTTP response as
    it arrives (never whole in memory or on disk), psycopg 3 or psycopg2; other databases get
    batched ``executemany`` inserts of ``batch_size`` rows.

    **Errors.** A table or schema that is not a plain identifier, a ``sql_conn_id`` that is not
    defined or whose hook is not a ``common.sql`` ``DbApiHook``, or a missing ``[sql]`` extra
    fails the task before any Stripe request, without retries.

    The return value (XCom) is ``{"report_run_id", "rows", "table", "interval_start",
    "interval_end"}`` (the interval as ISO 8601 UTC strings, or ``None``).

    :param report_type: e.g. ``balance_change_from_activity.itemized.3`` (templated).
    :param table: the table to load into, a plain identifier (templated).
    :param sql_conn_id: an Airflow connection whose hook is a ``DbApiHook`` (``postgres``,
        ``sqlite``, ``mysql``, …).
    :param parameters: other Stripe parameters: ``columns``, ``currency``, ``timezone``, … (templated).
    :param interval_start: defaults to the DAG run's data interval start (templated).
    :param interval_end: defaults to the DAG run's data interval end (templated).
    :param stripe_conn_id: the Airflow connection of the key.
    :param schema: the table's schema (PostgreSQL schema, attached SQLite database), a plain
        identifier; default: the connection's default.
    :param reuse_existing: reuse a pending or succeeded run with the same parameters.
    :param reuse_lookback: how far back from now the reuse lookup lists runs, at most.
    :param wait_for_data: wait for Stripe to prepare the interval's data instead of failing.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks of the run.
    :param timeout: give up waiting for the run after this many seconds (default 24 hours).
    :param data_poll_interval: seconds between report type checks while waiting for data.
    :param data_timeout: give up waiting for the data after this many seconds (default 36 hours).
    :param batch_size: rows per ``executemany`` batch (databases other than PostgreSQL).
    """

    template_fields: Sequence[str] = ("report_type", "parameters", "interval_start", "interval_end", "table")
    template_fields_renderers = {"parameters": "json"}
    ui_color = "#e9e3ff"

    def __init__(
        self,
        *,
        report_type: str,
        table: str,
        sql_conn_id: str,
        parameters: Mapping[str, Any] | None = None,
        interval_start: Any = None,
        interval_end: Any = None,
        stripe_conn_id: str = "stripe_default",
        schema: str | None = None,
        reuse_existing: bool = True,
        reuse_lookback: dt.timedelta | float = DEFAULT_REUSE_LOOKBACK,
        wait_for_data: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float = 24 * 3600.0,
        data_poll_interval: float = 600.0,
        data_timeout: float = 36 * 3600.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_reportruns.operators.steps import reuse_lookback_seconds

        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of rows, got {batch_size!r}.")
        self.report_type = report_type
        self.table = table
        self.sql_conn_id = sql_conn_id
        self.parameters = parameters
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.stripe_conn_id = stripe_conn_id
        self.schema = schema
        self.reuse_existing = reuse_existing
        self.reuse_lookback = reuse_lookback_seconds(reuse_lookback)
        self.wait_for_data = wait_for_data
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.data_poll_interval = float(data_poll_interval)
        self.data_timeout = float(data_timeout)
        self.batch_size = batch_size

    @cached_property
    def hook(self) -> StripeReportingHook:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        return StripeReportingHook(self.stripe_conn_id)

    def get_sql_hook(self) -> Any:
        """The ``DbApiHook`` of ``sql_conn_id``, after checking the table and schema names.

        :raises AirflowFailException: naming what is wrong (and the extra to install, if missing).
        """
        from airflow_provider_reportruns._compat import AirflowFailException, BaseHook
        from airflow_provider_reportruns.transfers.columns import check_identifier

        try:
            check_identifier(self.table, "table")
            if self.schema is not None:
                check_identifier(self.schema, "schema")
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        try:
            from airflow.providers.common.sql.hooks.sql import DbApiHook
        except ImportError:
            raise AirflowFailException(
                f"StripeReportToSqlOperator needs Airflow's common.sql provider: {SQL_EXTRA_HINT} "
                '(or "airflow-provider-reportruns[postgres]" for PostgreSQL).'
            ) from None
        try:
            conn = BaseHook.get_connection(self.sql_conn_id)
        except Exception as exc:
            if type(exc).__name__ != "AirflowNotFoundException":
                raise
            raise AirflowFailException(
                f"The Airflow connection '{self.sql_conn_id}' (sql_conn_id) is not defined: create it, "
                f"or set AIRFLOW_CONN_{self.sql_conn_id.upper()}."
            ) from None
        try:
            hook = conn.get_hook()  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise AirflowFailException(
                f"The connection '{self.sql_conn_id}' (conn type {conn.conn_type!r}) gives no hook here: "
                f"{exc}. Install the provider of that connection type; for SQLite and PostgreSQL, "
                f'{SQL_EXTRA_HINT} or "airflow-provider-reportruns[postgres]".'
            ) from None
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"The connection '{self.sql_conn_id}' (conn type {conn.conn_type!r}) gives a "
                f"{type(hook).__name__}, not a SQL hook (common.sql's DbApiHook): sql_conn_id must name "
                "a database connection such as postgres or sqlite."
            )
        return hook

    def build_parameters(self, context: Context) -> dict[str, Any]:
        """Stripe's ``parameters`` for this DAG run."""
        from airflow_provider_reportruns.operators.steps import build_parameters

        return build_parameters(
            self.report_type,
            self.parameters,
            interval_start=self.interval_start,
            interval_end=self.interval_end,
            context=context,
        )

    def _request(self, context: Context) -> RunRequest:
        from airflow_provider_reportruns.operators.steps import RunRequest

        return RunRequest.for_task(self.stripe_conn_id, self.report_type, self.build_parameters(context), context)

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingError
        from airflow_provider_reportruns.operators.steps import create_or_reuse, data_comes_later, with_data_hint

        sql_hook = self.get_sql_hook()  # a bad table or connection fails before any Stripe request
        request = self._request(context)
        try:
            run, lookup = create_or_reuse(
                self.hook, request, reuse_existing=self.reuse_existing, lookback=self.reuse_lookback, log=self.log
            )
        except StripeReportingError as exc:
            if not exc.is_data_unavailable:
                raise
            if not (self.wait_for_data and data_comes_later(exc) and "interval_end" in request.parameters):
                raise with_data_hint(exc, later="Set wait_for_data=True to wait for it in this task.") from None
            self.log.info("%s", exc.stripe_message)
            self._wait_for_data(int(request.parameters["interval_end"]))
            return self._after_data(request, sql_hook)
        return self._wait_and_load(run, lookup.first_poll_delay(self.poll_interval), request, sql_hook)

    def _after_data(self, request: RunRequest, sql_hook: Any) -> dict[str, Any]:
        from airflow_provider_reportruns.operators.steps import create_or_reuse

        # Another DAG run may have made the run while this one waited: look again.
        run, lookup = create_or_reuse(
            self.hook,
            request,
            reuse_existing=self.reuse_existing,
            lookback=self.reuse_lookback,
            log=self.log,
            after_data_wait=True,
        )
        return self._wait_and_load(run, lookup.first_poll_delay(self.poll_interval), request, sql_hook)

    def _wait_and_load(
        self, run: dict[str, Any], first_delay: float, request: RunRequest, sql_hook: Any
    ) -> dict[str, Any]:
        from airflow_provider_reportruns.operators.steps import defer_run_wait, wait_for_run

        done = wait_for_run(
            self.hook,
            run,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            first_delay=first_delay,
            log=self.log,
            defer=defer_run_wait(
                self, str(run["id"]), stripe_conn_id=self.stripe_conn_id, poll_interval=self.poll_interval
            )
            if self.deferrable
            else None,
        )
        self.log.info("Stripe report run %s succeeded.", done["id"])
        return self._load(done, request.parameters, sql_hook)

    def _load(self, run: Mapping[str, Any], parameters: Mapping[str, Any], sql_hook: Any) -> dict[str, Any]:
        from airflow_provider_reportruns.transfers.sql_load import LoadKey, ReportLoadError, load_result

        try:
            rows = load_result(
                sql_hook,
                self.hook,
                run,
                table=self.table,
                schema=self.schema,
                parameters=parameters,
                batch_size=self.batch_size,
                log=self.log,
            )
        except ReportLoadError as exc:
            raise AirflowException(str(exc)) from None
        key = LoadKey.for_run(str(run["id"]), self.report_type, parameters)
        return {
            "report_run_id": str(run["id"]),
            "rows": rows,
            "table": f"{self.schema}.{self.table}" if self.schema else self.table,
            "interval_start": _iso(key.interval_start),
            "interval_end": _iso(key.interval_end),
        }

    def _wait_for_data(self, interval_end: int) -> None:
        from airflow_provider_reportruns.operators.steps import wait_for_data

        wait_for_data(
            self,
            self.hook,
            self.report_type,
            interval_end,
            stripe_conn_id=self.stripe_conn_id,
            deferrable=self.deferrable,
            data_poll_interval=self.data_poll_interval,
            data_timeout=self.data_timeout,
            log=self.log,
        )

    # -- resuming after a deferral ---------------------------------------------------------------

    def execute_after_data(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume once the data is there: look for a run again, create one, then wait and load."""
        from airflow_provider_reportruns.operators.steps import data_timeout_message
        from airflow_provider_reportruns.triggers.events import raise_for_error_event

        sql_hook = self.get_sql_hook()
        request = self._request(context)
        status = (event or {}).get("status")
        if status == "timeout":
            last_seen = (event or {}).get("data_available_end")
            raise AirflowException(
                data_timeout_message(
                    self.report_type, int(request.parameters["interval_end"]), self.data_timeout, last_seen
                )
            )
        if status != "available":
            raise_for_error_event(event)
        return self._after_data(request, sql_hook)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume once the run finished: the same status model and errors as the polling path,
        then load."""
        from airflow_provider_reportruns.triggers.events import report_run_from_event

        sql_hook = self.get_sql_hook()
        run = report_run_from_event(event, timeout_error=AirflowException)
        self.log.info("Stripe report run %s succeeded.", run["id"])
        return self._load(run, self.build_parameters(context), sql_hook)

    # -- lineage ---------------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage's input and output of a finished load: the Stripe report type on the
        connection's account, and the table (see :mod:`airflow_provider_reportruns.lineage`).
        Called by the OpenLineage provider, when installed; ``None`` without it.

        :param task_instance: the finished task instance (unused).
        """
        from airflow_provider_reportruns.lineage import operator_lineage, stripe_report_dataset, table_dataset

        report = stripe_report_dataset(self.hook.client, str(self.report_type))
        return operator_lineage([report], [table_dataset(self.get_sql_hook(), str(self.table), self.schema)])


def _iso(value: str | None) -> str | None:
    """``2024-03-01 00:00:00+00:00`` as ``2024-03-01T00:00:00+00:00``."""
    return value.replace(" ", "T", 1) if value is not None else None
