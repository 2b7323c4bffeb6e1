"""``python -m benchmarks [--quick] [--only 1,3] [--output PATH]``: run the rows, print the table.

Exit status: 0 when every target is met (``--quick``: when every row produced numbers, since
tiny sizes say nothing about targets), 1 when a target is missed, 2 when a row could not run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks._common import REPO, Row, WaitCase, fmt


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``FULL`` is what the targets are for."""

    overhead_calls: int  # row 1: calls per client per operation
    flow_run_seconds: float  # row 2: T, how long the report run takes
    flow_poll_seconds: float  # row 2: P, the example DAG's poke interval
    download_bytes: int  # row 3
    download_repeats: int  # row 3: alternating repetitions of each side
    waits_cases: tuple[WaitCase, ...]  # row 4: each case runs coalesced, then per-run polling
    waits_rate: float  # row 4: max_requests_per_second of the connection, coalesced waits
    waits_cases_together: bool  # row 4: run the cases side by side (tiny sizes only: they share the CPU)
    parse_processes: int  # row 5: fresh processes per variant
    backfill_intervals: int  # row 6
    load_bytes: int = 1 << 30  # row 7
    load_repeats: int = 3  # row 7: alternating repetitions of each side


FULL = Sizes(
    overhead_calls=1000,
    flow_run_seconds=10.0,
    flow_poll_seconds=3.0,
    download_bytes=1 << 30,
    download_repeats=7,
    waits_cases=(
        WaitCase("1", waits=1000, poll_seconds=30.0, lead_seconds=5.0, spread_seconds=60.0),
        WaitCase("2", waits=5000, poll_seconds=30.0, lead_seconds=5.0, spread_seconds=60.0, rss_target_mb=300.0),
        # The old row's P and schedule: finishes over 30 s.
        WaitCase("3", waits=1000, poll_seconds=12.0, lead_seconds=5.0, spread_seconds=30.0),
        WaitCase(
            "4",
            waits=1000,
            poll_seconds=30.0,
            lead_seconds=5.0,
            spread_seconds=60.0,
            other_runs=20000,
            other_hours=4.0,
            backfill_minutes=15.0,
            old_run=True,
        ),
    ),
    waits_rate=25.0,  # Stripe's test-mode read limit
    waits_cases_together=False,
    parse_processes=20,
    backfill_intervals=30,
)
QUICK = Sizes(
    overhead_calls=20,
    flow_run_seconds=1.0,
    flow_poll_seconds=1.0,
    download_bytes=8 << 20,
    download_repeats=1,
    waits_cases=(
        WaitCase("1", waits=40, poll_seconds=1.0, lead_seconds=0.5, spread_seconds=1.0),
        WaitCase("2", waits=80, poll_seconds=1.0, lead_seconds=0.5, spread_seconds=1.0, rss_target_mb=300.0),
        WaitCase("3", waits=40, poll_seconds=0.5, lead_seconds=0.5, spread_seconds=1.0),
        WaitCase(
            "4",
            waits=40,
            poll_seconds=1.0,
            lead_seconds=0.5,
            spread_seconds=1.0,
            other_runs=300,
            other_hours=4.0,
            backfill_minutes=15.0,
            old_run=True,
        ),
    ),
    waits_rate=25.0,
    waits_cases_together=True,
    parse_processes=1,
    backfill_intervals=1,
    load_bytes=4 << 20,
    load_repeats=1,
)


# Row group -> module; rows 2 and 6 share one Airflow process (its first dag.test() costs ~6 s).
GROUPS = {"1": "overhead", "2+6": "flow", "3": "download", "4": "waits", "5": "parse", "7": "load"}


def _rows() -> dict[str, Callable[[Sizes, Path], list[Row]]]:
    import importlib

    def runner(module: str) -> Callable[[Sizes, Path], list[Row]]:
        return lambda sizes, workdir: importlib.import_module(f"benchmarks.{module}").run(sizes, workdir)

    return {group: runner(module) for group, module in GROUPS.items()}


def _selected(only: str | None) -> list[str]:
    groups = list(_rows())
    if not only:
        return groups
    wanted = {part.strip() for part in only.split(",") if part.strip()}
    return [g for g in groups if wanted & set(g.split("+"))]


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def print_table(rows: list[Row], out=sys.stdout) -> None:
    header = ("#", "measured", "ours", "reference", "ratio", "target", "result")
    lines = []
    for row in sorted(rows, key=lambda r: r.key):
        verdict = "—" if row.passed is None else ("PASS" if row.passed else "FAIL")
        lines.append(
            (
                row.key,
                row.measured,
                fmt(row.ours, row.unit),
                fmt(row.reference, row.unit),
                "—" if row.ratio is None else f"{row.ratio:.2f}",
                row.target,
                verdict,
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    rule = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), file=out)
    print(rule, file=out)
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
    print(file=out)
    for row in sorted(rows, key=lambda r: r.key):
        if row.error:
            print(f"{row.key}: could not measure: {row.error.splitlines()[0] if row.error else ''}", file=out)
        elif row.note:
            print(f"{row.key}: {row.note}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--only", help="comma-separated row numbers, e.g. 1,3")
    parser.add_argument("--output", type=Path, help="JSON results (default benchmarks/results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory with worker logs")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    output = args.output or REPO / "benchmarks" / ("results-quick.json" if args.quick else "results.json")
    workdir = Path(tempfile.mkdtemp(prefix="reportruns-bench-"))
    rows_by_group = _rows()
    groups = _selected(args.only)
    started = time.time()
    print(f"benchmarks ({'quick' if args.quick else 'full'}): rows {', '.join(groups)}; work dir {workdir}", flush=True)
    rows: list[Row] = []
    try:
        if args.quick:
            # Tiny sizes only prove the harness runs: run the groups side by side to save time.
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(groups)) as pool:
                futures = {g: pool.submit(rows_by_group[g], sizes, workdir / g) for g in groups}
                for group in groups:
                    rows.extend(futures[group].result())
        else:
            for group in groups:
                group_started = time.time()
                produced = rows_by_group[group](sizes, workdir / group)
                rows.extend(produced)
                print(f"  rows {group}: {time.time() - group_started:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.time() - started

    print()
    print_table(rows)
    print(f"\ntotal {elapsed:.0f} s; results in {output}")
    meta = {
        "command": "python -m benchmarks"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else ""),
        "quick": args.quick,
        "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "apache_airflow": _package_version("apache-airflow"),
        "stripe": _package_version("stripe"),
        "requests": _package_version("requests"),
        "urllib3": _package_version("urllib3"),
        "sizes": asdict(sizes),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"meta": meta, "rows": [r.as_json() for r in rows]}, indent=2, default=str) + "\n")

    if any(r.error for r in rows):
        return 2
    if args.quick:
        return 0
    return 1 if any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
