"""The report types the simulator knows: their parameters, columns, live-mode rule and interval.

This is the one description of the report types: the simulator validates report runs against it,
the CSV content follows its columns, and ``docs/report-types.md`` is generated from it. Parameter
sets follow Stripe's report types reference; column sets hold each type's default columns and the
optional ones Stripe documents for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DATA_AVAILABLE_START",
    "DEFAULT_LIVE_ONLY_REPORT_TYPES",
    "INT_PARAMETERS",
    "METADATA_COLUMN_PREFIXES",
    "PARAMETER_NAMES",
    "REPORT_TYPES",
    "REPORT_TYPE_IDS",
    "ReportTypeSpec",
    "interval_reading",
    "unknown_columns",
]

DEFAULT_DATA_AVAILABLE_START = 1577836800  # 2020-01-01T00:00:00Z
PARAMETER_NAMES = (
    "columns",
    "connected_account",
    "currency",
    "interval_end",
    "interval_start",
    "payout",
    "reporting_category",
    "timezone",
)
INT_PARAMETERS = ("interval_start", "interval_end")
#: Itemized balance-transaction reports take ``payment_metadata[KEY]``-style columns for any key.
METADATA_COLUMN_PREFIXES = ("payment_metadata", "refund_metadata", "transfer_metadata")

_INTERVAL = frozenset({"interval_start", "interval_end"})
_SUMMARY = ("reporting_category", "currency", "count", "gross", "fee", "net")
_ACTIVITY = (
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "description",
)
_ACTIVITY_LOCAL = tuple({"created_utc": "created", "available_on_utc": "available_on"}.get(c, c) for c in _ACTIVITY)
_PAYOUT = ("payout_id", "effective_at_utc", "currency", "gross", "fee", "net", "reporting_category", "description")
_RECON = ("automatic_payout_id", "automatic_payout_effective_at_utc", *_ACTIVITY)
_RECON_LOCAL = ("automatic_payout_id", "automatic_payout_effective_at", *_ACTIVITY_LOCAL)

# Optional columns of the itemized balance-transaction reports, in Stripe's words.
_TRANSACTION_EXTRA = (
    "source_id",
    "customer_facing_amount",
    "customer_facing_currency",
    "regulatory_tag",
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "customer_id",
    "customer_email",
    "customer_name",
    "customer_description",
    "shipping_address_line1",
    "shipping_address_line2",
    "shipping_address_city",
    "shipping_address_state",
    "shipping_address_postal_code",
    "shipping_address_country",
    "charge_id",
    "payment_intent_id",
    "charge_created_utc",
    "invoice_id",
    "invoice_number",
    "subscription_id",
    "payment_method_type",
    "is_link",
    "card_brand",
    "card_funding",
    "card_country",
    "statement_descriptor",
    "dispute_reason",
    "connected_account_id",
    "connected_account_name",
    "connected_account_country",
    "connected_account_direct_charge_id",
)
_PAYOUT_EXTRA = (
    "balance_transaction_id",
    "payout_expected_arrival_date",
    "payout_status",
    "payout_reversed_at_utc",
    "payout_type",
    "payout_description",
    "payout_destination_id",
)
# A type that takes ``timezone`` also has a local-time twin of each UTC time column.
_LOCAL_TWINS = {
    "created_utc": "created",
    "available_on_utc": "available_on",
    "effective_at_utc": "effective_at",
    "automatic_payout_effective_at_utc": "automatic_payout_effective_at",
    "charge_created_utc": "charge_created",
    "payout_reversed_at_utc": "payout_reversed_at",
}


@dataclass(frozen=True)
class ReportTypeSpec:
    """One report type as the simulator serves it.

    :param id: e.g. ``balance.summary.1``.
    :param name: the human name Stripe shows.
    :param required: parameters a run must carry.
    :param optional: parameters a run may carry.
    :param default_columns: the columns of a run that passes no ``columns``.
    :param columns: every column a run may ask for (the defaults first).
    :param metadata_prefixes: ``prefix[KEY]`` columns accepted for any ``KEY``.
    :param version: the integer after the last dot.
    :param shape: how rows are made: ``balance_summary``, ``summary`` or ``itemized``.
    :param live_mode_only: whether Stripe serves it only to live-mode keys.
    """

    id: str
    name: str
    required: frozenset[str]
    optional: frozenset[str]
    default_columns: tuple[str, ...]
    columns: tuple[str, ...]
    metadata_prefixes: tuple[str, ...]
    version: int
    shape: str
    live_mode_only: bool

    def accepts(self, parameter: str) -> bool:
        """Whether a run of this type may carry ``parameter``."""
        return parameter in self.required or parameter in self.optional


def _full(defaults: Sequence[str], extra: Iterable[str], local: bool) -> tuple[str, ...]:
    columns = list(defaults)
    for column in extra:
        if column not in columns:
            columns.append(column)
    if local:
        for utc, twin in _LOCAL_TWINS.items():
            if utc in columns and twin not in columns:
                columns.append(twin)
            if twin in columns and utc not in columns:
                columns.append(utc)
    return tuple(columns)


def _build() -> dict[str, ReportTypeSpec]:
    specs: list[ReportTypeSpec] = []
    cat = frozenset({"currency", "reporting_category"})

    def add(
        rid: str,
        name: str,
        required: Iterable[str],
        optional: Iterable[str],
        defaults: tuple[str, ...],
        shape: str,
        extra: Iterable[str] = (),
        metadata: bool = False,
    ) -> None:
        opt = frozenset(optional) | {"columns"}
        columns = _full(defaults, extra, "timezone" in opt)
        prefixes = METADATA_COLUMN_PREFIXES if metadata else ()
        version = int(rid.rsplit(".", 1)[1])
        specs.append(
            ReportTypeSpec(rid, name, frozenset(required), opt, defaults, columns, prefixes, version, shape, False)
        )

    add(
        "balance.summary.1",
        "Balance summary",
        _INTERVAL,
        {"timezone", "currency"},
        ("category", "description", "net_amount", "currency"),
        "balance_summary",
    )
    for v in (1, 2, 3):
        defaults = _ACTIVITY_LOCAL if v == 3 else _ACTIVITY
        if v == 2:
            defaults = (*defaults, "source_id")
        add(
            f"balance_change_from_activity.itemized.{v}",
            "Balance change from activity (itemized)",
            _INTERVAL,
            cat | {"timezone"} if v == 3 else cat,
            defaults,
            "itemized",
            _TRANSACTION_EXTRA,
            metadata=True,
        )
    add(
        "balance_change_from_activity.summary.1",
        "Balance change from activity (summary)",
        _INTERVAL,
        cat,
        _SUMMARY,
        "summary",
    )
    for v in (1, 2, 3):
        defaults = _PAYOUT if v == 1 else (*_PAYOUT, "payout_expected_arrival_date", "payout_status")
        if v == 3:
            defaults = tuple("effective_at" if c == "effective_at_utc" else c for c in defaults)
        opt = cat | {"timezone"} if v == 3 else cat
        add(f"payouts.itemized.{v}", "Payouts (itemized)", _INTERVAL, opt, defaults, "itemized", _PAYOUT_EXTRA)
    add("payouts.summary.1", "Payouts (summary)", _INTERVAL, cat, _SUMMARY, "summary")
    for v in (1, 2, 3, 4, 5):
        add(
            f"payout_reconciliation.itemized.{v}",
            "Payout reconciliation (itemized)",
            _INTERVAL,
            cat | {"timezone"} if v >= 4 else cat,
            _RECON_LOCAL if v >= 4 else _RECON,
            "itemized",
            _TRANSACTION_EXTRA,
            metadata=True,
        )
    add("payout_reconciliation.summary.1", "Payout reconciliation (summary)", _INTERVAL, cat, _SUMMARY, "summary")
    for v in (1, 2, 3, 4):
        add(
            f"payout_reconciliation.by_id.itemized.{v}",
            "Payout reconciliation for a single payout (itemized)",
            {"payout"},
            {"reporting_category"},
            _RECON,
            "itemized",
            _TRANSACTION_EXTRA,
            metadata=True,
        )
    add(
        "payout_reconciliation.by_id.summary.1",
        "Payout reconciliation for a single payout (summary)",
        {"payout"},
        {"reporting_category"},
        _SUMMARY,
        "summary",
    )
    for v in (1, 2, 3, 4):
        add(
            f"ending_balance_reconciliation.itemized.{v}",
            "Ending balance reconciliation (itemized)",
            {"interval_end"},
            cat,
            _RECON,
            "itemized",
            _TRANSACTION_EXTRA,
            metadata=True,
        )
    add(
        "ending_balance_reconciliation.summary.1",
        "Ending balance reconciliation (summary)",
        {"interval_end"},
        cat,
        _SUMMARY,
        "summary",
    )

    out: dict[str, ReportTypeSpec] = {}
    for spec in specs:
        out[spec.id] = spec
        # Connect platforms get a connected_account_* twin of every type, filterable by account,
        # and Stripe serves those only to live-mode keys.
        twin = f"connected_account_{spec.id}"
        out[twin] = ReportTypeSpec(
            twin,
            f"Connected accounts: {spec.name[0].lower()}{spec.name[1:]}",
            spec.required,
            spec.optional | {"connected_account"},
            ("connected_account", *spec.default_columns),
            ("connected_account", *spec.columns),
            spec.metadata_prefixes,
            spec.version,
            spec.shape,
            True,
        )
    return out


REPORT_TYPES: dict[str, ReportTypeSpec] = _build()
REPORT_TYPE_IDS: tuple[str, ...] = tuple(sorted(REPORT_TYPES))
DEFAULT_LIVE_ONLY_REPORT_TYPES: tuple[str, ...] = tuple(r for r in REPORT_TYPE_IDS if REPORT_TYPES[r].live_mode_only)


def interval_reading(spec: ReportTypeSpec) -> str:
    """How a report type reads its interval, in one sentence for people."""
    if "interval_start" in spec.required:
        return "`interval_start` (inclusive) to `interval_end` (exclusive)"
    if "interval_end" in spec.required:
        return "the balance as of `interval_end` (exclusive); no `interval_start`"
    return "no interval: the one payout named by `payout`"


def unknown_columns(spec: ReportTypeSpec, columns: Iterable[str]) -> list[tuple[str, str | None]]:
    """The requested columns the report type does not have, each with the closest real one.

    :param spec: the report type.
    :param columns: the requested column names.
    :returns: ``(column, suggestion or None)`` pairs in request order.
    """
    known = set(spec.columns)
    bad: list[tuple[str, str | None]] = []
    for column in columns:
        if column in known or _is_metadata(spec, column):
            continue
        close = difflib.get_close_matches(column, spec.columns, n=1)
        bad.append((column, close[0] if close else None))
    return bad


def _is_metadata(spec: ReportTypeSpec, column: str) -> bool:
    prefix, bracket, rest = column.partition("[")
    return bool(bracket) and prefix in spec.metadata_prefixes and len(rest) > 1 and rest.endswith("]")
