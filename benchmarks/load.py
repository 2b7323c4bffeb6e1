"""Row 7: loading a large result file into PostgreSQL, the to-SQL operator's loader vs ``psql \\copy``.

The simulator (in the parent) serves one run's result file padded to the requested size, and a
throw-away PostgreSQL cluster (``testing/postgres.py``) takes the rows. Each repetition runs one
fresh worker that loads the run with the operator's loader (``COPY … FROM STDIN`` streamed from the
HTTP response, in one transaction with the replace of the interval's rows) and one
``psql -c "\\copy …"`` of the same CSV, downloaded to disk beforehand, into an identical table,
alternating which goes first. Identical: the same columns, types and index (``LIKE … INCLUDING
ALL``), the provenance columns filled by constant defaults, so both sides write the same rows.
Both tables are truncated before each repetition, outside the timing, so each side writes into an
empty table.

Throughput is the file size over the load's own time: the worker times the loader call (request,
streaming, COPY, commit), psql its whole process (connect, read the file, COPY, exit). Memory: the
worker resets its peak RSS (``/proc/self/clear_refs``) just before the call and reads ``VmHWM``
after it, so Airflow's import-time footprint is not counted; psql's peak RSS comes from ``wait4``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Row, Worker, airflow_env, connection_json, failed_rows, median

MB = 1 << 20
THROUGHPUT_TARGET = 0.80
RSS_TARGET_MB = 64.0
REPORT_TYPE = "balance_change_from_activity.itemized.3"
# 2024-01-01 .. 2024-01-02 UTC: an interval the simulator has data for.
INTERVAL = {"interval_start": 1704067200, "interval_end": 1704153600}
OURS = "bench_loaded"
REFERENCE = "bench_copied"
SQL_CONN_ID = "bench_postgres"
# The small file the loader first creates its table from, before the large one is timed.
WARM_UP_BYTES = 64 << 10


def run(sizes: Any, workdir: Path) -> list[Row]:
    from airflow_provider_reportruns.client import StripeReportingClient
    from airflow_provider_reportruns.testing.postgres import PostgresCluster
    from airflow_provider_reportruns.testing.simulator import StripeSimulator

    names = [
        ("7a", "load into PostgreSQL: throughput vs psql \\copy"),
        ("7b", "load peak RSS growth"),
        ("7c", "same, \\copy of the bytes the loader sends"),
    ]
    size = sizes.load_bytes
    try:
        with StripeSimulator(result_size=WARM_UP_BYTES) as sim, PostgresCluster() as cluster:
            client = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=1000)
            warm_up = client.get_report_run(client.create_report_run(REPORT_TYPE, INTERVAL)["id"])
            env = airflow_env(
                workdir / "home",
                connection=connection_json(sim.url, sim.api_key, 20),
                **{f"AIRFLOW_CONN_{SQL_CONN_ID.upper()}": _postgres_connection(cluster)},
            )
            # The loader creates its table from the warm-up file; the reference gets the same columns.
            _ours(warm_up, workdir / "warm-up", env, WARM_UP_BYTES)
            columns = _csv_header(sim.result_content(warm_up["id"]))
            # The simulator serves every file at the size set now: the warm-up file is done with.
            sim.result_size = size
            # Another interval, so the run is not a reuse of the warm-up's.
            big_interval = {k: v + 86400 for k, v in INTERVAL.items()}
            report_run = client.get_report_run(client.create_report_run(REPORT_TYPE, big_interval)["id"])
            client.close()
            cluster.psql(_reference_table(report_run))
            csv_path, sent_path = workdir / "report.csv", workdir / "as-sent.csv"
            _write_files(sim.iter_result_content(report_run["id"]), report_run, csv_path, sent_path)
            results: dict[str, list[dict[str, Any]]] = {"ours": [], "psql": [], "sent": []}
            for repeat in range(sizes.load_repeats):
                sides = ["ours", "psql", "sent"]
                for side in sides[repeat % 3 :] + sides[: repeat % 3]:  # rotate who goes first
                    cluster.psql(f"truncate {OURS}, {REFERENCE}")
                    cluster.psql("checkpoint")  # no side pays for another's dirty pages
                    if side == "psql":
                        results[side].append(_psql_copy(cluster, csv_path, columns))
                    elif side == "sent":
                        results[side].append(_psql_copy(cluster, sent_path, [*columns, *_provenance_columns()]))
                    else:
                        results[side].append(_ours(report_run, workdir / f"ours-{repeat}", env, size))
            rows_loaded = {r["rows"] for side in results.values() for r in side}
            if len(rows_loaded) != 1:
                raise RuntimeError(f"the sides loaded different row counts: {sorted(rows_loaded)}")
            ours, theirs, sent = results["ours"], results["psql"], results["sent"]
    except Exception as exc:
        return failed_rows(names, f"≥ {THROUGHPUT_TARGET:.0%} of \\copy / ≤ {RSS_TARGET_MB:.0f} MB", str(exc))

    our_speed = median([size / r["seconds"] / MB for r in ours])
    psql_speed = median([size / r["seconds"] / MB for r in theirs])
    # Each back-to-back pair shares the machine's load of the moment (shared 2-core VMs).
    pair_ratios = [p["seconds"] / o["seconds"] for o, p in zip(ours, theirs, strict=True)]
    speed_ratio = median(pair_ratios)
    sent_ratios = [p["seconds"] / o["seconds"] for o, p in zip(ours, sent, strict=True)]
    sent_speed = median([size / r["seconds"] / MB for r in sent])
    speeds = {side: [round(size / r["seconds"] / MB) for r in results[side]] for side in results}
    growth = max(r["peak_growth_mb"] for r in ours)
    psql_rss = max(r["peak_rss_mb"] for r in theirs)
    repeats = f"{sizes.load_repeats} alternating repetitions each, {size / MB:,.0f} MiB file, {ours[0]['rows']:,} rows"
    return [
        Row(
            "7a",
            "load into PostgreSQL: throughput vs psql \\copy",
            our_speed,
            psql_speed,
            "MiB/s",
            speed_ratio,
            f"ratio ≥ {THROUGHPUT_TARGET:.2f}",
            speed_ratio >= THROUGHPUT_TARGET,
            note=(
                f"ratio: median of the {len(pair_ratios)} back-to-back pairs' ratios "
                f"({', '.join(f'{r:.2f}' for r in pair_ratios)}); throughputs: medians of {repeats}; ours "
                f"streams the HTTP response into COPY FROM STDIN, \\copy reads the same CSV from disk; each "
                f"repetition (MiB/s): ours {speeds['ours']}, psql {speeds['psql']}"
            ),
            details={"ours": ours, "psql": theirs, "bytes": size},
        ),
        Row(
            "7b",
            "load peak RSS growth (ref: psql's whole RSS)",
            growth,
            psql_rss,
            "MB",
            None,
            f"≤ {RSS_TARGET_MB:.0f} MB",
            growth <= RSS_TARGET_MB,
            note=(
                f"worst of {repeats}; the worker's VmHWM during the load minus its RSS before it "
                f"({ours[0]['rss_before_mb']:.0f} MB with Airflow imported); reference: psql's peak RSS"
            ),
            details={"peak_reset_supported": all(r["peak_reset"] for r in ours)},
        ),
        Row(
            "7c",
            "same, \\copy of the bytes the loader sends (diagnostic)",
            our_speed,
            sent_speed,
            "MiB/s",
            median(sent_ratios),
            "info",
            None,
            note=(
                "\\copy of the CSV with each record's provenance cells appended, as the loader streams it, "
                f"into the reference table with every column given; throughput counted on the report's size; pairs' ratios "
                f"({', '.join(f'{r:.2f}' for r in sent_ratios)}): the streaming's own cost, apart from the "
                "cells every row carries"
            ),
            details={"sent": sent},
        ),
    ]


def _reference_table(report_run: dict[str, Any]) -> str:
    """SQL making the reference table identical to the loader's: the same columns, types and
    index, and each row's provenance cells filled in by the server (constant defaults), so
    ``\\copy`` of the bare CSV writes the same rows as the loader."""
    from airflow_provider_reportruns.transfers.sql_load import PROVENANCE_COLUMNS, LoadKey

    key = LoadKey.for_run(report_run["id"], report_run["report_type"], report_run["parameters"])
    statements = [f"create table {REFERENCE} (like {OURS} including all)"]
    for column, value in zip(PROVENANCE_COLUMNS, key.values(), strict=True):
        if value is not None:
            literal = "'" + value.replace("'", "''") + "'"
            statements.append(f'alter table {REFERENCE} alter column "{column}" set default {literal}')
    return "; ".join(statements)


def _provenance_columns() -> tuple[str, ...]:
    from airflow_provider_reportruns.transfers.sql_load import PROVENANCE_COLUMNS

    return PROVENANCE_COLUMNS


def _write_files(pieces: Any, report_run: dict[str, Any], csv_path: Path, sent_path: Path) -> None:
    """The result file as served, and as the loader sends it to COPY: each record followed by
    the load's provenance cells (the simulator's records hold no line breaks)."""
    from airflow_provider_reportruns.transfers.sql_load import LoadKey

    suffix = LoadKey.for_run(report_run["id"], report_run["report_type"], report_run["parameters"]).csv_suffix()
    tail = b""
    header_done = False
    with open(csv_path, "wb") as plain, open(sent_path, "wb") as sent:
        for piece in pieces:
            plain.write(piece)
            data = tail + bytes(piece)
            cut = data.rfind(b"\n") + 1
            lines, tail = data[:cut], data[cut:]
            if not header_done and lines:
                header, lines = lines.split(b"\n", 1)
                sent.write(header + b"," + ",".join(_provenance_columns()).encode() + b"\n")
                header_done = True
            sent.write(lines.replace(b"\n", suffix + b"\n"))
        if tail:
            sent.write(tail + suffix + b"\n")


def _postgres_connection(cluster: Any) -> str:
    import json

    return json.dumps(cluster.airflow_connection())


def _csv_header(content: bytes) -> list[str]:
    import csv
    import io

    return next(csv.reader(io.StringIO(content.split(b"\n", 1)[0].decode())))


def _ours(report_run: dict[str, Any], workdir: Path, env: dict[str, str], size: int) -> dict[str, Any]:
    params = {"report_run": report_run, "table": OURS, "sql_conn_id": SQL_CONN_ID, "size": size}
    return Worker("load", params, workdir, env).finish(timeout=120 + size / (5 * MB))


def _psql_copy(cluster: Any, csv_path: Path, columns: list[str]) -> dict[str, Any]:
    from airflow_provider_reportruns.testing.postgres import postgres_bin

    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    path = str(csv_path).replace("'", "''")
    copy = f"\\copy {REFERENCE} ({quoted}) FROM '{path}' CSV HEADER"
    command = [postgres_bin("psql"), "-h", cluster.host, "-p", str(cluster.port), "-U", cluster.user]
    command += ["-d", cluster.database, "-X", "-v", "ON_ERROR_STOP=1", "-c", copy]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120 + csv_path.stat().st_size / (5 * MB)
    while True:  # wait4 gives this child's own peak RSS; poll it so a hung psql cannot hang us
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            raise TimeoutError("psql \\copy did not finish in time")
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0 or not out.startswith("COPY "):
        raise RuntimeError(f"psql \\copy failed: {err.strip() or out.strip()}")
    return {
        "seconds": seconds,
        "rows": int(out.split()[1]),
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
    }


def worker(params: dict[str, Any]) -> dict[str, Any]:
    import resource

    from benchmarks._common import peak_rss_mb, reset_peak_rss, rss_mb

    load = _loader(params)
    before = rss_mb()
    peak_reset = reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    rows = load()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_mb()
    return {
        "seconds": seconds,
        "rows": rows,
        "bytes": params["size"],
        "rss_before_mb": before,
        "peak_mb": peak,
        "peak_growth_mb": peak - before,
        "peak_reset": peak_reset,
        "cpu_user_s": after.ru_utime - usage.ru_utime,
        "cpu_system_s": after.ru_stime - usage.ru_stime,
    }


def _loader(params: dict[str, Any]) -> Any:
    """The loader call for this run, with the hooks built, the drivers imported and a first
    connection made beforehand, so the timing holds the load alone; it returns the rows loaded."""
    import logging

    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook
    from airflow_provider_reportruns.transfers.report_to_sql import DEFAULT_BATCH_SIZE
    from airflow_provider_reportruns.transfers.sql_load import load_result

    stripe_hook = StripeReportingHook()
    stripe_hook.client.session  # noqa: B018 - build the session (and import requests) before measuring
    sql_hook = PostgresHook(postgres_conn_id=params["sql_conn_id"])
    sql_hook.get_first("select 1")
    run = params["report_run"]
    log = logging.getLogger("benchmarks.load")

    def load() -> int:
        return load_result(
            sql_hook,
            stripe_hook,
            run,
            table=params["table"],
            schema=None,
            parameters=run["parameters"],
            batch_size=DEFAULT_BATCH_SIZE,  # COPY on PostgreSQL: unused, but the loader asks for it
            log=log,
        )

    return load
