"""A report's columns in a table: which kind each is, its SQL type per database, the provenance
columns every loaded row carries, and the load key they hold.

No Airflow import: the operator checks identifiers with it before any request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KEY_COLUMNS",
    "PROVENANCE_COLUMNS",
    "SQL_TYPES",
    "LoadKey",
    "check_identifier",
    "column_kind",
    "quote",
]

#: Columns every loaded row carries: where it came from. The last four are the load's key.
PROVENANCE_COLUMNS = ("_report_run_id", "_report_type", "_report_parameters", "_interval_start", "_interval_end")
KEY_COLUMNS = PROVENANCE_COLUMNS[1:]
_PROVENANCE_KINDS = {
    "_report_run_id": "text",
    "_report_type": "text",
    "_report_parameters": "text",
    "_interval_start": "utc",
    "_interval_end": "utc",
}

# Postgres truncates longer names silently; a plain identifier is all a table name needs.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_AMOUNT_COLUMNS = frozenset({"gross", "fee", "net", "amount"})
# Stripe's local-time twins of the ``*_utc`` columns: times in the run's ``timezone`` parameter.
_LOCAL_TIME_COLUMNS = frozenset(
    {"created", "available_on", "effective_at", "automatic_payout_effective_at", "charge_created", "payout_reversed_at"}
)

#: SQL type of each kind of column, per database (``default``: any other DB-API database).
SQL_TYPES: dict[str, dict[str, str]] = {
    "postgres": {
        "amount": "NUMERIC",
        "utc": "TIMESTAMPTZ",
        "local": "TIMESTAMP",
        "date": "DATE",
        "integer": "BIGINT",
        "text": "TEXT",
    },
    # SQLite has no exact decimal or time type: NUMERIC and TIMESTAMP are affinities (amounts are
    # stored as SQLite numbers, times as the report's text).
    "sqlite": {
        "amount": "NUMERIC",
        "utc": "TIMESTAMP",
        "local": "TIMESTAMP",
        "date": "DATE",
        "integer": "INTEGER",
        "text": "TEXT",
    },
    "default": {
        "amount": "DECIMAL(38, 6)",
        "utc": "TIMESTAMP",
        "local": "TIMESTAMP",
        "date": "DATE",
        "integer": "BIGINT",
        "text": "TEXT",
    },
}


def check_identifier(value: Any, what: str) -> str:
    """``value`` when it is a plain SQL identifier (letters, digits, ``_``; 63 at most).

    :raises ValueError: naming ``what`` and the value.
    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} must be a plain SQL identifier (a letter or _, then letters, digits or _; "
            f"at most 63 characters), got {value!r}."
        )
    return value


def quote(name: str) -> str:
    """``name`` as a quoted identifier (report columns such as ``payment_metadata[key]`` need it)."""
    return '"' + name.replace('"', '""') + '"'


def column_kind(name: str) -> str:
    """The kind of a report column, from its name: ``amount``, ``utc`` (a ``*_utc`` time),
    ``local`` (its local-time twin), ``date``, ``integer`` (counts) or ``text``."""
    if name in _PROVENANCE_KINDS:
        return _PROVENANCE_KINDS[name]
    if name.endswith("_utc"):
        return "utc"
    if name in _LOCAL_TIME_COLUMNS:
        return "local"
    if name.endswith("_date"):
        return "date"
    if name in _AMOUNT_COLUMNS or name.endswith("_amount"):
        return "amount"
    if name == "count" or name.endswith("_count"):
        return "integer"
    return "text"


@dataclass(frozen=True)
class LoadKey:
    """The provenance values of one load; all but the run id identify the rows it replaces.

    :param report_run_id: the run whose file is loaded.
    :param report_type: Stripe's report type id.
    :param parameters: the parameters but the interval and ``columns``, normalized, as canonical JSON.
    :param interval_start: ``2024-03-01 00:00:00+00:00``, or ``None`` for interval-less types.
    :param interval_end: the same for the end.
    """

    report_run_id: str
    report_type: str
    parameters: str
    interval_start: str | None
    interval_end: str | None

    @classmethod
    def for_run(cls, report_run_id: str, report_type: str, parameters: Mapping[str, Any]) -> LoadKey:
        import datetime as dt

        from airflow_provider_reportruns.operators.steps.reuse import INTERVAL_TOKENS, normalized_parameters

        normalized = normalized_parameters(parameters)
        bounds = [normalized.pop(token, None) for token in INTERVAL_TOKENS]
        # ``columns`` picks what each row shows, not which rows there are: a load with other
        # columns replaces the interval's rows (and adds the columns) instead of doubling them.
        normalized.pop("columns", None)
        start, end = (
            dt.datetime.fromtimestamp(int(b), dt.timezone.utc).isoformat(sep=" ") if b is not None else None
            for b in bounds
        )
        text = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
        return cls(report_run_id, report_type, text, start, end)

    def values(self) -> tuple[str | None, ...]:
        """In :data:`PROVENANCE_COLUMNS` order."""
        return (self.report_run_id, self.report_type, self.parameters, self.interval_start, self.interval_end)

    def csv_suffix(self) -> bytes:
        """``,"run",…`` appended to each CSV record for COPY (``None`` as an empty, NULL cell)."""
        cells = ("" if v is None else '"' + v.replace('"', '""') + '"' for v in self.values())
        return ("," + ",".join(cells)).encode()
