"""Loading a result file into a table: column types, the table's shape, and one transaction that
replaces a load's previous rows, fed from the HTTP response as it streams.

No Airflow import at module level: the operator imports this module inside ``execute``.

One load is keyed by report type, parameters (normalized; interval and ``columns`` apart) and interval; its
rows carry that key and the run id in the :data:`PROVENANCE_COLUMNS`. A load deletes the key's
rows and writes the new ones in one transaction, so a retried, cleared or re-run interval never
doubles a row, and a load that fails part-way (a cut download, a value the column refuses) is
rolled back whole.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns.transfers.columns import (
    KEY_COLUMNS,
    PROVENANCE_COLUMNS,
    SQL_TYPES,
    LoadKey,
    check_identifier,
    column_kind,
    quote,
)
from airflow_provider_reportruns.transfers.csv_records import CsvRecords, ReportLoadError

if TYPE_CHECKING:
    import logging

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

__all__ = [
    "KEY_COLUMNS",
    "PROVENANCE_COLUMNS",
    "SQL_TYPES",
    "CsvRecords",
    "LoadKey",
    "ReportLoadError",
    "check_identifier",
    "column_kind",
    "load_result",
]

# Chunks queued between the download and a psycopg2 COPY: bounds the memory held in between.
_COPY_QUEUE_CHUNKS = 8


class _Table:
    """The target table in one database: its dialect, shape and statements."""

    def __init__(self, sql_hook: Any, conn: Any, table: str, schema: str | None) -> None:
        self.hook = sql_hook
        self.conn = conn
        self.table = table
        self.schema = schema
        conn_type = str(getattr(sql_hook, "conn_type", "") or "")
        self.dialect = (
            "postgres" if conn_type in ("postgres", "postgresql") else "sqlite" if conn_type == "sqlite" else "default"
        )
        self.placeholder = str(getattr(sql_hook, "placeholder", "%s") or "%s")
        # Other databases quote their own way (MySQL: backticks); common.sql knows how.
        self._quote_format = (
            None if self.dialect != "default" else str(getattr(sql_hook, "escape_word_format", None) or '"{}"')
        )
        self.name = f"{self.quote(schema)}.{self.quote(table)}" if schema else self.quote(table)
        self.display = f"{schema}.{table}" if schema else table

    def quote(self, name: str) -> str:
        return quote(name) if self._quote_format is None else self._quote_format.format(name)

    def sql_type(self, column: str) -> str:
        return SQL_TYPES[self.dialect][column_kind(column)]

    def existing_columns(self, cursor: Any) -> list[str] | None:
        """The table's columns, or ``None`` when it does not exist."""
        if self.dialect == "sqlite":
            prefix = f"{self.quote(self.schema)}." if self.schema else ""
            cursor.execute(f"PRAGMA {prefix}table_info({self.quote(self.table)})")
            names = [str(row[1]) for row in cursor.fetchall()]
        elif self.dialect == "postgres":
            p = self.placeholder
            schema_test = f"table_schema = {p}" if self.schema else "table_schema = current_schema()"
            cursor.execute(
                "SELECT column_name FROM information_schema.columns "
                f"WHERE {schema_test} AND table_name = {p} ORDER BY ordinal_position",
                (self.schema, self.table) if self.schema else (self.table,),
            )
            names = [str(row[0]) for row in cursor.fetchall()]
        else:  # any database: ask for no rows and read the columns' names
            try:
                cursor.execute(f"SELECT * FROM {self.name} WHERE 1 = 0")
            except Exception:
                return None
            names = [str(column[0]) for column in cursor.description or ()]
            cursor.fetchall()
        return names or None

    def prepare(self, cursor: Any, header: Sequence[str], log: logging.Logger | Any) -> None:
        """Create the table, or add the columns it lacks, and its index on ``_interval_start``."""
        columns = [*header, *PROVENANCE_COLUMNS]
        existing = self.existing_columns(cursor)
        if existing is None:
            body = ", ".join(f"{self.quote(c)} {self.sql_type(c)}" for c in columns)
            # IF NOT EXISTS: a first load of another key may create it at the same moment.
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.name} ({body})")
            log.info("Created table %s with %d columns.", self.display, len(columns))
        else:
            for column in [c for c in columns if c not in set(existing)]:
                cursor.execute(f"ALTER TABLE {self.name} ADD COLUMN {self.quote(column)} {self.sql_type(column)}")
                log.info("Added column %s (%s) to table %s.", column, self.sql_type(column), self.display)
        if self.dialect in ("postgres", "sqlite"):
            # A load deletes its key's rows first: without an index that scans the whole table on
            # every load. One narrow column is enough to find them (few loads share an interval)
            # and costs a COPY about a sixth of its time, where the whole key cost it half.
            index = quote(f"{self.table[:50]}_report_load")
            on = f"{quote(self.schema)}.{index}" if self.schema and self.dialect == "sqlite" else index
            table = quote(self.table) if self.dialect == "sqlite" else self.name
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {on} ON {table} ({quote('_interval_start')})")

    def delete_key(self, cursor: Any, key: LoadKey) -> int:
        """Delete the rows a previous load of ``key`` wrote; return how many."""
        tests, args = [], []
        for column, value in zip(KEY_COLUMNS, key.values()[1:], strict=True):
            if value is None:
                tests.append(f"{self.quote(column)} IS NULL")
            else:
                tests.append(f"{self.quote(column)} = {self.placeholder}")
                args.append(value)
        cursor.execute(f"DELETE FROM {self.name} WHERE {' AND '.join(tests)}", tuple(args))
        return max(0, int(cursor.rowcount or 0))


class _Sink:
    """Where whole CSV records go: a COPY, or batched inserts."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self, error: BaseException | None) -> None:
        raise NotImplementedError


class _InsertSink(_Sink):
    """Batched ``executemany`` inserts of parsed records (any DB-API database)."""

    def __init__(self, cursor: Any, table: _Table, columns: Sequence[str], key: LoadKey, batch_size: int) -> None:
        self.cursor = cursor
        self.batch_size = batch_size
        self.constants = list(key.values())
        self.width = len(columns) - len(PROVENANCE_COLUMNS)
        marks = ", ".join([table.placeholder] * len(columns))
        self.statement = f"INSERT INTO {table.name} ({', '.join(map(table.quote, columns))}) VALUES ({marks})"
        self.batch: list[list[Any]] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        for row in csv.reader(io.StringIO(data.decode("utf-8"), newline="")):
            if len(row) != self.width:
                raise ReportLoadError(
                    f"A record of the result file has {len(row)} cells where the header has {self.width}: "
                    f"{','.join(row)[:200]!r}"
                )
            self.batch.append([cell if cell != "" else None for cell in row] + self.constants)
            if len(self.batch) >= self.batch_size:
                self._flush()

    def _flush(self) -> None:
        if self.batch:
            self.cursor.executemany(self.statement, self.batch)
            self.batch = []

    def close(self, error: BaseException | None) -> None:
        if error is None:
            self._flush()


def _copy_statement(table: _Table, columns: Sequence[str]) -> str:
    typed = [quote(c) for c in columns if column_kind(c) != "text"]
    # FORCE_NULL: an empty cell is NULL in a typed column even when quoted, as in the insert path.
    force_null = f", FORCE_NULL ({', '.join(typed)})" if typed else ""
    return f"COPY {table.name} ({', '.join(map(quote, columns))}) FROM STDIN (FORMAT csv{force_null})"


class _Psycopg3CopySink(_Sink):
    """``COPY … FROM STDIN`` through psycopg 3, which takes the data as it is pushed."""

    def __init__(self, cursor: Any, statement: str) -> None:
        self._stack = contextlib.ExitStack()
        self._copy = self._stack.enter_context(cursor.copy(statement))

    def write(self, data: bytes) -> None:
        if data:
            self._copy.write(data)

    def close(self, error: BaseException | None) -> None:
        if error is None:
            self._stack.close()
        else:  # psycopg ends the COPY with CopyFail, so the server drops what it was sent
            with contextlib.suppress(Exception):
                self._stack.__exit__(type(error), error, error.__traceback__)


class _QueueReader:
    """A file to read from, fed by another thread: what psycopg2's ``copy_expert`` needs."""

    _END = b""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=_COPY_QUEUE_CHUNKS)

    def read(self, size: int = -1) -> bytes:
        item = self.chunks.get()
        if isinstance(item, BaseException):
            raise item
        return item

    readline = read


class _Psycopg2CopySink(_Sink):
    """``COPY … FROM STDIN`` through psycopg2, which pulls from a file: the COPY runs in a thread
    reading what the download pushes into a bounded queue."""

    def __init__(self, cursor: Any, statement: str) -> None:
        self._reader = _QueueReader()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(cursor, statement), name="report-copy", daemon=True)
        self._thread.start()

    def _run(self, cursor: Any, statement: str) -> None:
        try:
            cursor.copy_expert(statement, self._reader)
        except BaseException as exc:
            self._error = exc

    def _put(self, item: bytes | BaseException) -> None:
        while True:
            if not self._thread.is_alive():
                # The COPY ended early (the server refused a row): stop the download with its error.
                if self._error is not None:
                    raise self._error
                return
            try:
                self._reader.chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> None:
        if data:
            self._put(data)

    def close(self, error: BaseException | None) -> None:
        if error is not None:
            # The reader raises it inside copy_expert, which ends the COPY with CopyFail; if the
            # COPY itself failed first, its error is the one already on its way.
            with contextlib.suppress(BaseException):
                self._put(ReportLoadError("the download of the result file failed"))
            self._thread.join()
            return
        self._put(_QueueReader._END)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Attempt:
    """One try at loading the file: what ``download_atomically`` opens, writes and closes."""

    def __init__(self, table: _Table, key: LoadKey, batch_size: int, log: logging.Logger | Any) -> None:
        self.table = table
        self.key = key
        self.batch_size = batch_size
        self.log = log
        self.use_copy = table.dialect == "postgres"
        self.records = CsvRecords(key.csv_suffix() if self.use_copy else b"")
        self.sink: _Sink | None = None
        self.cursor: Any = None
        self.replaced = 0

    def __enter__(self) -> _Attempt:
        self.cursor = self.table.conn.cursor()
        if self.table.dialect == "postgres":
            # *_utc times are written without an offset: they are read as UTC in this transaction.
            self.cursor.execute("SET LOCAL TIME ZONE 'UTC'")
            # Two loads of one key at once would both delete, then both insert: one waits here.
            self.cursor.execute(
                f"SELECT pg_advisory_xact_lock(hashtextextended({self.table.placeholder}, 0))",
                (json.dumps([self.table.display, *self.key.values()[1:]]),),
            )
        elif self.table.dialect == "sqlite" and not self.table.conn.in_transaction:
            self.cursor.execute("BEGIN")  # so the table's creation is undone with the rows
        return self

    def write(self, data: bytes | memoryview) -> None:
        out = self.records.feed(data)
        if self.sink is None and self.records.header is not None:
            self.sink = self._start(self.records.header)
        if self.sink is not None:
            self.sink.write(out)

    def _start(self, header: list[str]) -> _Sink:
        clash = [c for c in header if c in PROVENANCE_COLUMNS]
        if clash or len(set(header)) != len(header) or not all(header):
            raise ReportLoadError(
                f"The result file's header cannot be a table's columns (empty, repeated, or one of "
                f"{', '.join(PROVENANCE_COLUMNS)}): {header!r}"
            )
        self.table.prepare(self.cursor, header, self.log)
        self.replaced = self.table.delete_key(self.cursor, self.key)
        columns = [*header, *PROVENANCE_COLUMNS]
        if not self.use_copy:
            return _InsertSink(self.cursor, self.table, columns, self.key, self.batch_size)
        statement = _copy_statement(self.table, columns)
        if hasattr(self.cursor, "copy_expert"):
            return _Psycopg2CopySink(self.cursor, statement)
        return _Psycopg3CopySink(self.cursor, statement)

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        try:
            if error is None:
                tail = self.records.finish()
                if self.records.header is None:
                    raise ReportLoadError("The result file is empty: not even a header line.")
                if self.sink is None:
                    self.sink = self._start(self.records.header)
                self.sink.write(tail)
                self.sink.close(None)
            elif self.sink is not None:
                self.sink.close(error)
        finally:
            with contextlib.suppress(Exception):
                self.cursor.close()


def _connect(sql_hook: Any) -> Any:
    conn = sql_hook.get_conn()
    if getattr(sql_hook, "conn_type", "") != "sqlite" and getattr(sql_hook, "supports_autocommit", False):
        sql_hook.set_autocommit(conn, False)
    return conn


@contextlib.contextmanager
def _closing(conn: Any) -> Iterator[Any]:
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def load_result(
    sql_hook: Any,
    stripe_hook: StripeReportingHook,
    run: Mapping[str, Any],
    *,
    table: str,
    schema: str | None,
    parameters: Mapping[str, Any],
    batch_size: int,
    log: logging.Logger | Any,
) -> int:
    """Stream a succeeded run's result file into ``table``, replacing the rows of the same load
    key, in one transaction; return the number of rows loaded.

    PostgreSQL takes the file through ``COPY … FROM STDIN``, each record with the constant
    provenance cells appended as it streams; other databases through ``executemany`` batches of
    ``batch_size`` rows. A download cut off part-way starts the transaction over (as a download
    to a file does), up to the connection's ``max_retries``; an expired file URL is refreshed.

    :param sql_hook: a ``common.sql`` ``DbApiHook``.
    :param parameters: the run's parameters (the load key's parameters and interval).
    :raises ReportLoadError: after rolling back, naming the run, the table and the cause.
    """
    from airflow_provider_reportruns.client import result_file

    run = stripe_hook.succeeded_report_run(run)
    run_id = str(run["id"])
    key = LoadKey.for_run(run_id, str(run.get("report_type")), parameters)
    attempts: list[_Attempt] = []
    with _closing(_connect(sql_hook)) as conn:
        target = _Table(sql_hook, conn, table, schema)

        def open_attempt() -> _Attempt:
            with contextlib.suppress(Exception):
                conn.rollback()  # a fresh transaction for each attempt
            attempts.append(_Attempt(target, key, batch_size, log))
            return attempts[-1]

        def download(fresh: Mapping[str, Any]) -> int:
            file = result_file(fresh) or {}
            return stripe_hook.client.download_atomically(
                file["url"],
                open_attempt,
                conn.commit,
                conn.rollback,
                expected_size=file.get("size"),
                what=f"the result file of report run {run_id}",
            )

        try:
            size = stripe_hook.with_fresh_result(run, download)
        except Exception as exc:
            raise ReportLoadError(
                f"Loading report run {run_id} ({key.report_type}) into table {target.display} failed and was "
                f"rolled back: the table keeps the rows it had. Cause: {_describe(exc)}"
            ) from exc
    done = attempts[-1]
    log.info(
        "Loaded %d rows of report run %s (%s bytes) into table %s, replacing %d rows of an earlier load.",
        done.records.records,
        run_id,
        size,
        target.display,
        done.replaced,
    )
    return done.records.records


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
