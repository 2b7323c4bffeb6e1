"""Write ``docs/report-types.md`` from the catalogue, so the page and the simulator cannot drift.

``python -m airflow_provider_reportruns.testing.simulator.report_types_page > docs/report-types.md``
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from airflow_provider_reportruns.testing.simulator.catalogue import (
    REPORT_TYPE_IDS,
    REPORT_TYPES,
    ReportTypeSpec,
    interval_reading,
)

__all__ = ["COMMAND", "render_markdown"]

COMMAND = "python -m airflow_provider_reportruns.testing.simulator.report_types_page > docs/report-types.md"

_INTRO = """\
# Report types

<!-- Generated from the simulator's catalogue; do not edit. Regenerate with:
     {command} -->

Every report type the bundled simulator knows, with the parameters it takes, its columns and
whether it needs a live-mode key. The simulator refuses what Stripe refuses: a parameter the type
does not list, a missing required one, or a column the type does not have (a 400 with
`param: parameters[columns]` naming the column). Stripe's own reference is
<https://stripe.com/docs/reports/report-types>.

## The interval

`interval_start` and `interval_end` are Unix seconds, UTC instants. `interval_start` is
inclusive, `interval_end` exclusive: `[interval_start, interval_end)`. Both must lie within the
report type's `data_available_start` and `data_available_end`, and the start must come before the
end; otherwise Stripe answers 400 ("Data for the report type … is only available through …").

The operators fill them in this order: their own `interval_start` / `interval_end` arguments
(an aware datetime, an ISO 8601 string or Unix seconds), then the same keys inside `parameters`,
then the DAG run's data interval (`data_interval_start` and `data_interval_end`). Only the bounds
the type takes are filled in:

- most types read `interval_start` to `interval_end`;
- `ending_balance_reconciliation.*` types take `interval_end` only: the balance at that moment;
- `payout_reconciliation.by_id.*` types take `payout` (a `po_…` id) and no interval at all.

## What `timezone` does, and does not do

`timezone` (an IANA name such as `America/New_York`) is accepted only by the types that list it
below, and refused by the others, the `by_id` types among them. It changes how the times in the
file are written: the local-time columns (`created`, `available_on`, `effective_at`, …) are
written in that zone, the `*_utc` columns stay in UTC. It never moves the interval:
`interval_start` and `interval_end` are instants, whatever `timezone` says.

So "one file per New York day" comes from the DAG's timetable, which makes the data interval run
from New York midnight to New York midnight; add `timezone` as well if the file's local-time
columns should read in New York time:

```python dag file=dags/stripe_new_york_days.py
import pendulum
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

with DAG(
    dag_id="stripe_new_york_days",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="America/New_York"),
    start_date=pendulum.datetime(2025, 1, 1, tz="America/New_York"),
    catchup=False,
):
    StripeCreateReportRunOperator(
        task_id="create",
        report_type="balance_change_from_activity.itemized.3",
        parameters={{"timezone": "America/New_York", "columns": ["balance_transaction_id", "created", "net"]}},
    )
```

## Live-mode keys

The `connected_account_*` types report on a platform's connected accounts and need a live-mode key
(`sk_live_…` or `rk_live_…`); with a test-mode key Stripe answers 400, and the simulator does the
same unless it is started with other `live_only_report_types`.

## Columns

Without `columns`, a run has the type's default columns. `columns` picks and orders any of the
default and optional columns listed for the type. Itemized reports on balance transactions also
take metadata columns for any key: `payment_metadata[KEY]`, `refund_metadata[KEY]` and
`transfer_metadata[KEY]`.

## All report types

| Report type | Required | Optional | Interval | Live-mode key |
|---|---|---|---|---|
"""


# Interval first, as a reader looks for it; then the filters, then columns.
_PARAMETER_ORDER = (
    "interval_start",
    "interval_end",
    "payout",
    "timezone",
    "currency",
    "reporting_category",
    "connected_account",
    "columns",
)


def _parameters(names: Iterable[str]) -> str:
    return _codes(sorted(names, key=lambda n: (_PARAMETER_ORDER.index(n) if n in _PARAMETER_ORDER else 99, n)))


def _codes(names: Iterable[str]) -> str:
    listed = [f"`{name}`" for name in names]
    return ", ".join(listed) if listed else "none"


def _summary_row(spec: ReportTypeSpec) -> str:
    return (
        f"| [`{spec.id}`](#{_anchor(spec.id)}) | {_parameters(spec.required)} | {_parameters(spec.optional)} "
        f"| {interval_reading(spec)} | {'yes' if spec.live_mode_only else 'no'} |"
    )


def _anchor(report_type: str) -> str:
    # GitHub's heading anchors drop dots and keep underscores.
    return report_type.replace(".", "")


def _section(spec: ReportTypeSpec) -> list[str]:
    optional_columns = [c for c in spec.columns if c not in spec.default_columns]
    lines = [
        f"### {spec.id}",
        "",
        f"{spec.name}. Interval: {interval_reading(spec)}. Live-mode key: {'yes' if spec.live_mode_only else 'no'}.",
        "",
        f"- Required parameters: {_parameters(spec.required)}",
        f"- Optional parameters: {_parameters(spec.optional)}",
        f"- Default columns: {_codes(spec.default_columns)}",
        f"- Optional columns: {_codes(optional_columns)}",
    ]
    if spec.metadata_prefixes:
        lines.append(f"- Metadata columns: {_codes(f'{p}[KEY]' for p in spec.metadata_prefixes)}")
    lines.append("")
    return lines


def render_markdown() -> str:
    """The whole of ``docs/report-types.md``."""
    specs = [REPORT_TYPES[rid] for rid in REPORT_TYPE_IDS]
    lines = [_INTRO.format(command=COMMAND).rstrip("\n")]
    lines.extend(_summary_row(spec) for spec in specs)
    lines.extend(["", "## Each report type", ""])
    for spec in specs:
        lines.extend(_section(spec))
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    """Print the page to stdout."""
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
