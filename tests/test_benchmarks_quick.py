"""``python -m benchmarks --quick`` still produces every row with numbers (the harness cannot rot).

Tiny sizes say nothing about the targets, so only the shape is checked: every row present,
measured (no error), with a number for our figure and, where the row has one, the reference.
The benchmarks run in their own processes with their own ``AIRFLOW_HOME``; this test only reads
the JSON they write.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Row -> whether it compares against a reference figure.
EXPECTED_ROWS = {
    "1a": True,
    "1b": True,
    "1c": True,
    "2a": True,
    "2b": False,
    "2c": True,
    "3a": True,
    "3b": True,
    # Row 4: per case (1-4), coalesced waits against per-run polling; case 4 adds the old run (i, j).
    **{f"4.{case}{letter}": True for case in "123" for letter in "abcdefgh"},
    **{f"4.4{letter}": True for letter in "abcdefghij"},
    "5a": True,
    "5b": True,
    "6a": True,
    "6b": True,
    "6c": True,
    "6d": True,
    "7a": True,
    "7b": True,
    "7c": True,
}

pytestmark = pytest.mark.skipif(
    int(version("apache-airflow").split(".")[0]) < 3, reason="the benchmarks measure the Airflow 3 environment"
)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _postgres_missing() -> str | None:
    """Why row 7 cannot run here (no PostgreSQL server binaries), or ``None``."""
    from airflow_provider_reportruns.testing.postgres import PostgresUnavailable, postgres_bin

    try:
        postgres_bin("initdb")
        postgres_bin("postgres")
    except PostgresUnavailable as exc:
        return str(exc)
    return None


def test_quick_benchmarks_produce_every_row_with_numbers(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    expected = dict(EXPECTED_ROWS)
    only: list[str] = []
    missing = _postgres_missing()
    if missing is not None:
        # Row 7 loads into a PostgreSQL server; the others still prove the harness runs.
        warnings.warn(f"benchmark row 7 not run: {missing}", stacklevel=1)
        expected = {key: ref for key, ref in expected.items() if not key.startswith("7")}
        only = ["--only", "1,2,3,4,5,6"]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output), *only],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,  # under scripts/test's 300 s per-test ceiling, so a hang fails here with output
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(output.read_text())
    rows = {row["key"]: row for row in results["rows"]}

    assert sorted(rows) == sorted(expected)
    for key, has_reference in expected.items():
        row = rows[key]
        assert row["error"] is None, f"{key}: {row['error']}"
        assert _is_number(row["ours"]), f"{key}: ours = {row['ours']!r}"
        if has_reference:
            assert _is_number(row["reference"]), f"{key}: reference = {row['reference']!r}"
        assert row["target"], key
    assert results["meta"]["quick"] is True
    # The table went to stdout too, one line per row.
    for key in expected:
        assert any(line.startswith(f"{key} ") for line in completed.stdout.splitlines()), key
