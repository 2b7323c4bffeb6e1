"""``docs/report-types.md`` is generated from the simulator's catalogue and must match it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_reportruns.testing.simulator.catalogue import REPORT_TYPE_IDS, REPORT_TYPES
from airflow_provider_reportruns.testing.simulator.report_types_page import COMMAND, render_markdown

PAGE = Path(__file__).resolve().parent.parent / "docs" / "report-types.md"


def test_page_matches_the_catalogue() -> None:
    assert PAGE.read_text(encoding="utf-8") == render_markdown(), (
        f"docs/report-types.md disagrees with the simulator's catalogue; regenerate it with:\n    {COMMAND}"
    )


def test_the_command_prints_the_page() -> None:
    module = COMMAND.split()[2]
    out = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, check=True).stdout
    assert out == render_markdown()


def test_page_lists_every_report_type_with_its_parameters_and_columns() -> None:
    page = render_markdown()
    for rid in REPORT_TYPE_IDS:
        spec = REPORT_TYPES[rid]
        section = page.split(f"\n### {rid}\n", 1)[1].split("\n### ", 1)[0]
        for column in spec.columns:
            assert f"`{column}`" in section, (rid, column)
        for parameter in spec.required | spec.optional:
            assert f"`{parameter}`" in section, (rid, parameter)
        assert f"Live-mode key: {'yes' if spec.live_mode_only else 'no'}." in section
    by_id = page.split("\n### payout_reconciliation.by_id.itemized.4\n", 1)[1].split("\n### ", 1)[0]
    assert "`timezone`" not in by_id and "no interval" in by_id
    ending = page.split("\n### ending_balance_reconciliation.summary.1\n", 1)[1].split("\n### ", 1)[0]
    assert "Required parameters: `interval_end`\n" in ending


def test_a_column_added_to_the_catalogue_changes_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = REPORT_TYPES["payouts.itemized.3"]
    grown = dataclasses.replace(spec, columns=(*spec.columns, "payout_trace_id"))
    monkeypatch.setitem(REPORT_TYPES, "payouts.itemized.3", grown)
    assert render_markdown() != PAGE.read_text(encoding="utf-8")
