"""Worker-side Airflow plumbing for ``dag.test()`` runs (rows 2 and 6).

The minimum that ``tests/airflow_harness.py`` also does, kept here so the benchmarks do not depend
on test code: create the metadata DB in-process, load a DAG file from anywhere and store it
(Airflow 3's ``dag.test()`` refuses a DAG that is not serialized), run it, and time each task try.
The worker's environment (``_common.airflow_env``) already points Airflow at a throw-away home
with an empty dags folder, so ``dag.test()``'s per-call bundle re-sync walks nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

BUNDLE_NAME = "dags-folder"


def airflow_major() -> int:
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


def ensure_db() -> None:
    """Create the metadata DB from the ORM (cheaper than ``airflow db migrate`` in a subprocess)."""
    from airflow.utils.db import initdb

    initdb()
    if airflow_major() >= 3:
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        DagBundlesManager().sync_bundles_to_db()


def load_dag(dag_file: Path, dag_id: str) -> Any:
    """Parse ``dag_file`` and (Airflow 3) store it, so ``dag.test()`` accepts it."""
    if airflow_major() >= 3:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

        bag = DagBag(dag_folder=str(dag_file), safe_mode=False, bundle_path=dag_file.parent, bundle_name=BUNDLE_NAME)
    else:
        from airflow.models.dagbag import DagBag

        bag = DagBag(dag_folder=str(dag_file), safe_mode=False, include_examples=False)
    dag = bag.dags.get(dag_id)
    if dag is None:
        raise LookupError(f"DAG {dag_id!r} not in {dag_file}: {bag.import_errors}")
    if airflow_major() >= 3:
        sync_bag_to_db(bag, BUNDLE_NAME, None)
    return dag


def test_dag(dag: Any, logical_date: datetime) -> Any:
    if airflow_major() >= 3:
        return dag.test(logical_date=logical_date)
    return dag.test(execution_date=logical_date)


def task_states(dag_run: Any) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        from airflow.models.dagrun import DagRun

        fresh = session.get(DagRun, dag_run.id)
        return {
            ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in fresh.get_task_instances(session=session)
        }


@contextlib.contextmanager
def timed_tasks(sink: list[tuple[str, float]]) -> Iterator[None]:
    """Append ``(task_id, seconds)`` for every task try ``dag.test()`` runs (its ``_run_task``)."""
    if airflow_major() >= 3:
        import airflow.sdk.definitions.dag as module
    else:
        import airflow.models.dag as module
    original = module._run_task

    def run_task(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink.append((kwargs["ti"].task_id, time.perf_counter() - started))

    module._run_task = run_task
    try:
        yield
    finally:
        module._run_task = original
