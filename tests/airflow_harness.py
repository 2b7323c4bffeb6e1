"""Run real DAGs through ``dag.test()`` on Airflow 3.3 and 2.11, and collect what happened.

Used by ``tests/conftest.py`` and by ``scripts/demo``; deliberately free of pytest.

Order matters: :func:`configure_environment` must run before anything imports ``airflow``
(Airflow reads its configuration, and opens the metadata DB, at import time). Then
:func:`run_dag` migrates the DB on first use and runs one DAG run in this process.

Airflow 2 vs 3, as measured with 3.3.2 and 2.11.2 (the quirks this module hides):

* Loading: 3.x ``dag.test()`` refuses a DAG that is not serialized in the metadata DB, and it
  re-syncs the "dags-folder" bundle (parses every file in ``[core] dags_folder``) on every call.
  We keep the session's dags folder empty and serialize the DAG file given to :func:`run_dag`
  ourselves, so a DAG can live anywhere (``tmp_path``, ``example_dags/``) and the per-call walk
  stays cheap. 2.11 runs any DagBag-loaded DAG without storing it.
  ``DagBag`` lives in ``airflow.dag_processing.dagbag`` on 3.x (the old path warns) and has no
  ``include_examples=`` argument there.
* The date: 3.x ``dag.test(logical_date=...)`` (must be timezone-aware), 2.11
  ``dag.test(execution_date=...)``. Both replace an existing run of the same DAG and logical
  date, so a second run of the same DAG and date wipes the first run's XComs: results are
  snapshotted into :class:`DagRunResult` as soon as the run ends.
* Run ids: 3.x builds them from ``run_after`` (wall clock now), 2.11 from the logical date.
* Logs: neither version writes task log files during ``dag.test()``. 3.x runs the task in-process
  behind an in-process Execution API; its structlog loggers write to ``sys.stdout`` (looked up
  when each logger is built; pytest disables structlog's logger cache via ``PYTEST_VERSION``)
  and stdlib logging goes through the root handler. 2.11 adds a stdout ``StreamHandler`` to
  ``airflow.task``. We capture per task try by wrapping the private ``_run_task`` helper that both
  versions' ``dag.test()`` call once per try (``airflow.sdk.definitions.dag`` on 3.x,
  ``airflow.models.dag`` on 2.11): a handler on the root logger plus a tee of stdout/stderr.
  Airflow's secret masker is NOT applied to what we capture, so a secret-scan over these
  logs is stricter than production (where registered secrets would be replaced by ``***``).
* ``print()`` inside a task goes to the task log in a real deployment (both versions redirect
  stdout there); in ``dag.test()`` it goes to stdout, which we tee, so it is captured too.
* Deferrable tasks: both versions run the trigger inline in ``dag.test()``; the try number does
  not move while deferred, and the trigger's own log lines land in the same try's log.
* 2.11's task runner installs a SIGTERM handler in the calling process and never restores it
  (SIGTERM then raises inside whatever runs next instead of stopping pytest); we restore it.
* ``context["ti"].log`` exists on 2.11 but not on 3.x's ``RuntimeTaskInstance``; use
  ``self.log`` or a module logger in operators.
* Data intervals: see ``tests/test_harness.py`` -- on 3.x ``schedule="@daily"`` gives a
  zero-length interval at the logical date; ``CronDataIntervalTimetable`` gives the previous day
  on both versions.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "DagRunResult",
    "TaskTry",
    "airflow_major",
    "configure_environment",
    "connection_env",
    "connection_env_var",
    "ensure_db",
    "run_dag",
]

# The bundle every Airflow 3 install has by default; DAGs we serialize are filed under it.
_BUNDLE_NAME = "dags-folder"


def configure_environment(home: Path, *, dags_folder: Path | None = None, colors: bool = False) -> None:
    """Point Airflow at a throw-away ``AIRFLOW_HOME``. Must run before ``airflow`` is imported.

    Inherited ``AIRFLOW__*`` overrides and ``AIRFLOW_CONFIG`` are dropped so a developer's shell
    cannot change what the tests see; ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` are left alone.

    :param home: directory for airflow.cfg, the SQLite metadata DB and logs (created if missing).
    :param dags_folder: ``[core] dags_folder``; defaults to an empty ``home/dags``. On Airflow 3
        every ``dag.test()`` parses every file in it, so keep it small.
    :param colors: keep colored console logs (off by default: escape codes break log assertions).
    """
    if "airflow" in sys.modules:
        raise RuntimeError(
            "airflow was imported before the test environment was configured; "
            "a plugin or module imported it too early (it must not import airflow at import time)"
        )
    home = Path(home).resolve()
    dags_folder = Path(dags_folder).resolve() if dags_folder else home / "dags"
    dags_folder.mkdir(parents=True, exist_ok=True)
    for name in [n for n in os.environ if n.startswith("AIRFLOW__") or n == "AIRFLOW_CONFIG"]:
        del os.environ[name]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # 2.x would otherwise insert ~60 example connections at init.
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACK_DEPTH": "10",
            # 2.11 only: without it every process warns about timer units.
            "AIRFLOW__METRICS__TIMER_UNIT_CONSISTENCY": "True",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": str(colors),
        }
    )
    if not colors:
        os.environ["NO_COLOR"] = "1"


@functools.cache
def airflow_major() -> int:
    """Major version of the installed Airflow, without importing it."""
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


@contextlib.contextmanager
def _logging_preserved() -> Iterator[None]:
    """Undo logging changes made inside the block.

    2.11's alembic env.py runs ``fileConfig(alembic.ini)`` during ``initdb``: it swaps the root
    handler for a WARN-level stderr one, which would silence task logs for the rest of the process.
    (3.x only does that when the root logger has no handlers.)
    """
    manager = logging.root.manager
    saved = {
        logger: (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in [logging.root, *manager.loggerDict.values()]
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        for logger, (handlers, level, propagate, disabled) in saved.items():
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


_db_lock = threading.Lock()
_db_ready = False


def ensure_db() -> None:
    """Create the metadata DB once per process (in-process ``initdb``: schema from the ORM).

    Cheaper than ``airflow db migrate`` in a subprocess, which re-pays the ~2 s ``import airflow``.
    """
    global _db_ready
    with _db_lock:
        if _db_ready:
            return
        from airflow.utils.db import initdb

        with _logging_preserved():
            initdb()
        if airflow_major() >= 3:
            # DAG rows reference their bundle's row (foreign key); dag.test() would add it only
            # after we have already serialized the DAG.
            from airflow.dag_processing.bundles.manager import DagBundlesManager

            DagBundlesManager().sync_bundles_to_db()
        _db_ready = True


# --------------------------------------------------------------------------------------------
# Connections from the environment


def connection_env_var(conn_id: str) -> str:
    """Name of the environment variable Airflow reads connection ``conn_id`` from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@contextlib.contextmanager
def connection_env(
    conn_id: str,
    *,
    conn_type: str,
    host: str | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[str]:
    """Define an Airflow connection through ``AIRFLOW_CONN_<ID>`` (JSON form) for the block.

    Works on both versions, also for tasks run by ``dag.test()`` (3.x resolves it in the
    in-process Execution API, which reads the same environment). Restores the previous value.
    Yields the variable's name.
    """
    fields: dict[str, Any] = {"conn_type": conn_type}
    for key, value in (
        ("host", host),
        ("login", login),
        ("password", password),
        ("schema", schema),
        ("port", port),
        ("extra", dict(extra) if extra is not None else None),
    ):
        if value is not None:
            fields[key] = value
    name = connection_env_var(conn_id)
    previous = os.environ.get(name)
    os.environ[name] = json.dumps(fields)
    try:
        yield name
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


# --------------------------------------------------------------------------------------------
# Log capture


def _inside_logging_handler() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "emit" and isinstance(frame.f_locals.get("self"), logging.Handler):
            return True
        frame = frame.f_back
    return False


class _Tee(io.TextIOBase):
    """Write-through copy of a text stream into a buffer, while ``active``.

    Writes made by a stdlib logging handler are skipped: our own handler already captured that
    record (2.11's root handler writes to whatever ``sys.stdout`` is at the time, which would
    double every line). A handler created while the tee is installed may keep writing to it after
    we uninstall it; ``active`` stops it from capturing then.
    """

    def __init__(self, target: TextIO, sink: list[str]) -> None:
        self._target = target
        self._sink = sink
        self.active = True

    def write(self, s: str) -> int:
        if self.active and not _inside_logging_handler():
            self._sink.append(s)
        return self._target.write(s)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._target.fileno()


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.NOTSET)
        self._sink = sink
        self.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s - %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.append(self.format(record) + "\n")
        except Exception:  # a broken record must not fail the task under test
            self.handleError(record)


def _loggers_to_attach() -> list[logging.Logger]:
    # The root logger sees everything that propagates; loggers that stop propagation
    # (2.11 configures some that way) get the handler too so their records are not lost.
    others = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    return [logging.root, *others]


@contextlib.contextmanager
def _capture(sink: list[str]) -> Iterator[None]:
    """Capture stdlib log records, structlog output (3.x writes it to ``sys.stdout``), prints."""
    handler = _ListHandler(sink)
    loggers = _loggers_to_attach()
    for logger in loggers:
        logger.addHandler(handler)
    out, err = sys.stdout, sys.stderr
    tee_out, tee_err = _Tee(out, sink), _Tee(err, sink)
    sys.stdout, sys.stderr = tee_out, tee_err  # type: ignore[assignment]
    try:
        yield
    finally:
        tee_out.active = tee_err.active = False
        sys.stdout, sys.stderr = out, err
        for logger in loggers:
            logger.removeHandler(handler)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class TaskTry:
    """One call of the task by ``dag.test()``: a try, including any inline trigger run."""

    task_id: str
    map_index: int
    try_number: int
    log: str


@dataclass
class DagRunResult:
    """A snapshot of one finished DAG run: states, XComs, rendered fields, and logs per try.

    Keys use ``map_index=-1`` for unmapped tasks, as Airflow does.
    """

    dag_id: str
    run_id: str
    state: str
    logical_date: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    conf: dict[str, Any]
    task_states: dict[tuple[str, int], str]
    try_numbers: dict[tuple[str, int], int]
    xcoms: dict[tuple[str, int, str], Any]
    rendered_fields: dict[tuple[str, int], dict[str, Any]]
    tries: list[TaskTry]
    log_text: str = field(repr=False)
    """Everything logged or printed during the whole ``dag.test()`` call, tasks included."""

    @property
    def data_interval(self) -> tuple[datetime | None, datetime | None]:
        return self.data_interval_start, self.data_interval_end

    def task_state(self, task_id: str, map_index: int = -1) -> str:
        return self.task_states[(task_id, map_index)]

    def map_indexes(self, task_id: str) -> list[int]:
        """Map indexes of ``task_id``'s task instances (``[-1]`` if not mapped)."""
        return sorted(m for (t, m) in self.task_states if t == task_id)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The deserialized XCom value; ``KeyError`` if the task did not push it."""
        try:
            return self.xcoms[(task_id, map_index, key)]
        except KeyError:
            pushed = sorted(k for k in self.xcoms if k[0] == task_id)
            raise KeyError(f"no XCom {key!r} from {task_id}[{map_index}]; pushed: {pushed}") from None

    def rendered(self, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """Rendered template fields as stored by Airflow (last try only; JSON-friendly values)."""
        return self.rendered_fields[(task_id, map_index)]

    def logs(self, task_id: str, map_index: int = -1) -> list[str]:
        """Log text of each try of the task instance, in order."""
        return [t.log for t in self.tries if t.task_id == task_id and t.map_index == map_index]

    def log(self, task_id: str, map_index: int = -1, try_number: int | None = None) -> str:
        """Log text of one try (default: the last one)."""
        tries = [t for t in self.tries if t.task_id == task_id and t.map_index == map_index]
        if try_number is not None:
            tries = [t for t in tries if t.try_number == try_number]
        if not tries:
            raise KeyError(f"no log for {task_id}[{map_index}] try {try_number}")
        return tries[-1].log

    def stored_run_id(self, task_id: str) -> str:
        """The report run whose file ``task_id`` downloaded, read from its log.

        ``StripeReportToStorageOperator`` pushes no separate run id XCom; its log names the run
        once per successful download.
        """
        found = re.findall(r"Downloaded the result file of report run (frr_\w+)", "".join(self.logs(task_id)))
        assert len(found) == 1, f"{task_id} downloaded {len(found)} files: {found}"
        return found[0]


# --------------------------------------------------------------------------------------------
# Running


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


def _load_dag(dag_file: Path, dag_id: str) -> Any:
    if airflow_major() >= 3:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

        bag = DagBag(str(dag_file), safe_mode=False, bundle_path=dag_file.parent, bundle_name=_BUNDLE_NAME)
    else:
        from airflow.models.dagbag import DagBag

        bag = DagBag(str(dag_file), safe_mode=False, include_examples=False)
    dag = bag.dags.get(dag_id)
    if dag is None:
        errors = "\n".join(f"{path}:\n{error}" for path, error in bag.import_errors.items())
        raise LookupError(f"DAG {dag_id!r} not found in {dag_file}; found {sorted(bag.dags)}\n{errors}")
    if airflow_major() >= 3:
        # dag.test() refuses DAGs that are not serialized in the DB ("dag is not serialized").
        sync_bag_to_db(bag, _BUNDLE_NAME, None)
    return dag


def _run_task_module() -> Any:
    if airflow_major() >= 3:
        import airflow.sdk.definitions.dag as module
    else:
        import airflow.models.dag as module
    if not hasattr(module, "_run_task"):
        raise RuntimeError(f"{module.__name__}._run_task is gone: update tests/airflow_harness.py")
    return module


@contextlib.contextmanager
def _capture_each_try(tries: list[TaskTry]) -> Iterator[None]:
    module = _run_task_module()
    original = module._run_task

    def run_task_capturing(*args: Any, **kwargs: Any) -> Any:
        ti = kwargs["ti"]
        sink: list[str] = []
        try:
            with _capture(sink):
                return original(*args, **kwargs)
        finally:
            tries.append(TaskTry(ti.task_id, ti.map_index, ti.try_number, "".join(sink)))

    module._run_task = run_task_capturing
    try:
        yield
    finally:
        module._run_task = original


def _snapshot(dag_id: str, run_id: str, tries: list[TaskTry], log_text: str) -> DagRunResult:
    from airflow.models.dagrun import DagRun
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if airflow_major() >= 3:
        from airflow.models.xcom import XComModel as XCom
    else:
        from airflow.models.xcom import XCom

    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        tis = dr.get_task_instances(session=session)
        if airflow_major() >= 3:
            rows = session.scalars(XCom.get_many(run_id=run_id, dag_ids=dag_id)).all()
            xcoms = {(x.task_id, x.map_index, x.key): XCom.deserialize_value(x) for x in rows}
        else:  # 2.x returns a Query whose rows deserialize themselves on load
            rows = XCom.get_many(run_id=run_id, dag_ids=dag_id, session=session).all()
            xcoms = {(x.task_id, x.map_index, x.key): x.value for x in rows}
        rendered = {
            (r.task_id, r.map_index): dict(r.rendered_fields or {})
            for r in session.scalars(select(RTIF).where(RTIF.dag_id == dag_id, RTIF.run_id == run_id))
        }
        return DagRunResult(
            dag_id=dag_id,
            run_id=run_id,
            state=_state(dr.state),
            logical_date=getattr(dr, "logical_date", None) or getattr(dr, "execution_date", None),
            data_interval_start=dr.data_interval_start,
            data_interval_end=dr.data_interval_end,
            conf=dict(dr.conf or {}),
            task_states={(ti.task_id, ti.map_index): _state(ti.state) for ti in tis},
            try_numbers={(ti.task_id, ti.map_index): ti.try_number for ti in tis},
            xcoms=xcoms,
            rendered_fields=rendered,
            tries=list(tries),
            log_text=log_text,
        )


def run_dag(
    dag_file: Path,
    dag_id: str,
    *,
    logical_date: datetime,
    conf: dict[str, Any] | None = None,
) -> DagRunResult:
    """Run one DAG run of ``dag_id`` from ``dag_file`` through ``dag.test()`` in this process.

    Deferrable tasks run their trigger inline; no scheduler or triggerer is involved.
    A failing task does not raise: look at :attr:`DagRunResult.state` and the task states.

    :param dag_file: the Python file defining the DAG (anywhere: tmp dir, ``example_dags/``).
    :param dag_id: which DAG of that file to run.
    :param logical_date: timezone-aware logical date of the run. Data interval: what the DAG's
        timetable infers for a manual run at that moment.
    :param conf: ``dag_run.conf`` for the run.
    """
    if logical_date.tzinfo is None or logical_date.utcoffset() is None:
        raise ValueError("logical_date must be timezone-aware (Airflow 3 rejects naive datetimes)")
    ensure_db()
    dag = _load_dag(Path(dag_file).resolve(), dag_id)
    tries: list[TaskTry] = []
    sink: list[str] = []
    with _capture(sink), _capture_each_try(tries), _sigterm_preserved():
        if airflow_major() >= 3:
            dr = dag.test(logical_date=logical_date, run_conf=conf)
        else:
            dr = dag.test(execution_date=logical_date, run_conf=conf)
    return _snapshot(dag_id, dr.run_id, tries, "".join(sink))


@contextlib.contextmanager
def _sigterm_preserved() -> Iterator[None]:
    """Put back the SIGTERM handler a task run may replace.

    2.11's ``TaskInstance._run_raw_task`` installs a handler that raises AirflowTaskTerminated and
    never restores the old one: afterwards SIGTERM no longer stops the (test) process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
