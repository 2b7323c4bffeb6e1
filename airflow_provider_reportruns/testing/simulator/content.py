"""The CSV content of result files: rows derived from a hash of the run, and fixed-width filler.

A file is a function of its report type and parameters, so two runs asking the same thing get the
same bytes, and a padded file of any size streams without being held in memory.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_provider_reportruns.testing.simulator.catalogue import (
    DEFAULT_DATA_AVAILABLE_START,
    METADATA_COLUMN_PREFIXES,
    ReportTypeSpec,
)

__all__ = ["FILLER_PARAMETERS", "TIME_COLUMNS", "Filler", "RowMaker", "b62", "csv_field", "natural_content", "utc"]

_BLOCK_TARGET = 1 << 20  # filler block size for padded result files
_MAX_NATURAL_ROWS = 2_000
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62(data: bytes, length: int) -> str:
    """``length`` base-62 characters drawn from ``data``, the alphabet of Stripe's ids."""
    # Callers pass enough entropy (>= 18 bytes for 24 characters) that no position is predictable.
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_ALNUM[r])
    return "".join(out)


def utc(ts: float) -> str:
    """``ts`` as Stripe writes a UTC time in reports and messages."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


_CATEGORIES = ("charge", "refund", "fee", "payout", "transfer", "dispute", "other_adjustment")
_TZ_CACHE: dict[str, Any] = {}
# Columns holding a time: (offset from the row's time in seconds, local time instead of UTC).
TIME_COLUMNS = {
    "created_utc": (0, False),
    "created": (0, True),
    "available_on_utc": (2 * 86400, False),
    "available_on": (2 * 86400, True),
    "effective_at_utc": (86400, False),
    "effective_at": (86400, True),
    "automatic_payout_effective_at_utc": (86400, False),
    "automatic_payout_effective_at": (86400, True),
    "charge_created_utc": (-3600, False),
    "charge_created": (-3600, True),
    "payout_reversed_at_utc": (3 * 86400, False),
    "payout_reversed_at": (3 * 86400, True),
}
_ID_PREFIXES = {
    "customer_id": "cus_",
    "charge_id": "ch_",
    "payment_intent_id": "pi_",
    "invoice_id": "in_",
    "subscription_id": "sub_",
    "connected_account_id": "acct_",
    "connected_account_direct_charge_id": "py_",
    "payout_destination_id": "ba_",
}
_FIXED_CELLS = {
    "regulatory_tag": "standard",
    "shipping_address_line2": "Suite 100",
    "shipping_address_city": "San Francisco",
    "shipping_address_state": "CA",
    "shipping_address_postal_code": "94105",
    "shipping_address_country": "US",
    "payment_method_type": "card",
    "is_link": "false",
    "card_brand": "visa",
    "card_funding": "credit",
    "card_country": "US",
    "statement_descriptor": "SIMULATOR",
    "dispute_reason": "general",
    "connected_account_name": "Simulated connected account",
    "connected_account_country": "US",
    "payout_type": "bank_account",
    "payout_description": "STRIPE PAYOUT",
}
FILLER_PARAMETERS = ("currency", "reporting_category", "timezone", "payout", "connected_account")
_PAD_COLUMNS = ("description", "reporting_category", "category", "balance_transaction_id", "payout_id")


def _local(ts: float, tz_name: str | None) -> str:
    if not tz_name:
        return utc(ts)
    tz = _TZ_CACHE.get(tz_name)
    if tz is None:
        try:
            from zoneinfo import ZoneInfo  # imported lazily: only timezone-aware columns need it

            tz = ZoneInfo(tz_name)
        except Exception:
            # No tzdata on this machine (or an unknown name): UTC keeps the file deterministic.
            tz = timezone.utc
        _TZ_CACHE[tz_name] = tz
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def csv_field(value: str) -> str:
    """One CSV cell, quoted only when it has to be."""
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


class RowMaker:
    """Derives the cells of report rows from a hash, so a file is a function of its inputs."""

    def __init__(self, report_type: str, parameters: Mapping[str, Any], columns: Sequence[str]) -> None:
        self.report_type = report_type
        self.columns = tuple(columns)
        self.parameters = dict(parameters)
        canon = json.dumps([report_type, self.parameters], sort_keys=True, separators=(",", ":"))
        self.seed = hashlib.blake2b(canon.encode(), digest_size=16).digest()
        self.currency = str(self.parameters.get("currency") or "usd").lower()
        self.tz = self.parameters.get("timezone")

    def digest(self, index: int) -> bytes:
        """The 32 hash bytes row ``index`` draws its cells from."""
        return hashlib.blake2b(self.seed + struct.pack(">Q", index), digest_size=32).digest()

    def cells(self, index: int, ts: int, category: str | None = None) -> dict[str, str]:
        """Cells of row ``index`` at time ``ts``, for this maker's columns only (rows are hot)."""
        d = self.digest(index)
        category = category or self.parameters.get("reporting_category") or _CATEGORIES[d[0] % len(_CATEGORIES)]
        gross = 100 + int.from_bytes(d[1:5], "big") % 500_000
        if category in ("refund", "payout", "dispute"):
            gross = -gross
        fee = 0 if category in ("payout", "transfer") else abs(gross) * 29 // 1000 + 30
        values: dict[str, str] = {}
        for column in self.columns:
            if column in TIME_COLUMNS:
                offset, local = TIME_COLUMNS[column]
                values[column] = _local(ts + offset, self.tz) if local else utc(ts + offset)
            elif column == "balance_transaction_id":
                values[column] = "txn_" + b62(d[4:], 24)
            elif column == "source_id":
                values[column] = "ch_" + b62(d[8:] + d[:8], 24)
            elif column in ("payout_id", "automatic_payout_id"):
                values[column] = self.parameters.get("payout") or "po_" + b62(d[12:] + d[:12], 24)
            elif column == "connected_account":
                values[column] = self.parameters.get("connected_account") or "acct_" + b62(d[16:] + d[:16], 16)
            elif column == "currency":
                values[column] = self.currency
            elif column in ("gross", "amount"):
                values[column] = _money(gross)
            elif column == "fee":
                values[column] = _money(fee)
            elif column in ("net", "net_amount"):
                values[column] = _money(gross - fee)
            elif column == "count":
                values[column] = str(1 + d[30] % 50)
            elif column in ("reporting_category", "category"):
                values[column] = category
            elif column == "description":
                values[column] = f"Simulated {category.replace('_', ' ')} {index}"
            elif column == "payout_status":
                values[column] = "paid"
            elif column == "payout_expected_arrival_date":
                values[column] = utc(ts + 2 * 86400)[:10]
            else:
                values[column] = self.extra_cell(column, d, index)
        return values

    def extra_cell(self, column: str, d: bytes, index: int) -> str:
        """A cell of a column outside the usual defaults: ids, customer, card and metadata fields.

        :raises KeyError: for a column the catalogue does not list, so a new column without a
            value here fails its test instead of writing an empty cell.
        """
        prefix, bracket, key = column.partition("[")
        if bracket and prefix in METADATA_COLUMN_PREFIXES:
            return f"{key[:-1]}-{b62(d[20:] + d[:20], 8)}"
        if column in _ID_PREFIXES:
            size = 16 if column.startswith("connected_account") else 24
            return _ID_PREFIXES[column] + b62(d[index % 7 :] + d[: index % 7], size)
        if column == "customer_facing_amount":
            return _money(100 + int.from_bytes(d[1:5], "big") % 500_000)
        if column == "customer_facing_currency":
            return self.currency
        if column == "customer_email":
            return f"customer{index}@example.com"
        if column == "customer_name":
            return f"Customer {index}"
        if column == "customer_description":
            return f"Simulated customer {index}"
        if column == "invoice_number":
            return f"SIM-{index:06d}"
        if column == "shipping_address_line1":
            return f"{1 + d[29] % 999} Market Street"
        return _FIXED_CELLS[column]

    def line(self, values: Mapping[str, str]) -> str:
        """One CSV line of ``values`` in this maker's column order."""
        return ",".join(csv_field(values.get(c, "")) for c in self.columns) + "\n"


def natural_content(spec: ReportTypeSpec, parameters: Mapping[str, Any]) -> tuple[bytes, RowMaker]:
    """The report's own rows (header included) for a run's parameters, and the maker of its rows.

    :param spec: the report type.
    :param parameters: the run's parameters, as validated.
    """
    columns = list(parameters.get("columns") or spec.default_columns or ())
    maker = RowMaker(spec.id, parameters, columns)
    lines = [",".join(csv_field(c) for c in columns) + "\n"]
    end = parameters.get("interval_end")
    start = parameters.get("interval_start")
    # A payout's own report has no interval: its rows sit at times derived from the payout id.
    anchor = DEFAULT_DATA_AVAILABLE_START + int.from_bytes(maker.digest(0)[:4], "big") % (86400 * 900)
    if spec.shape == "balance_summary":
        s, e = int(start or 0), int(end or 0)
        d = maker.digest(0)
        opening = int.from_bytes(d[:4], "big") % 10_000_000
        activity = int.from_bytes(d[4:8], "big") % 2_000_000 - 500_000
        payouts = -(int.from_bytes(d[8:12], "big") % 1_500_000)
        rows = (
            ("starting_balance", f"Starting balance as of {utc(s)}", opening),
            ("activity", "Activity", activity),
            ("payouts", "Payouts", payouts),
            ("ending_balance", f"Ending balance as of {utc(e)}", opening + activity + payouts),
        )
        for category, description, cents in rows:
            values = maker.cells(0, s, category)
            for column, value in (("description", description), ("net_amount", _money(cents))):
                if column in values:
                    values[column] = value
            lines.append(maker.line(values))
    elif spec.shape == "summary":
        pinned = parameters.get("reporting_category")
        ts = int(start if start is not None else end if end is not None else anchor)
        for index, category in enumerate([pinned] if pinned else _CATEGORIES[:6]):
            lines.append(maker.line(maker.cells(index, ts, category)))
    else:
        if end is None:
            s, e = anchor, anchor + 12 * 3600
        else:
            e = int(end)
            s = int(start) if start is not None else e - 86400
        # One row per hour, thinned out for long intervals so a file stays cheap to build.
        hours = -(-(e - s) // 3600)
        step = 3600 * max(1, -(-hours // _MAX_NATURAL_ROWS))
        for index, ts in enumerate(range(s, e, step)):
            lines.append(maker.line(maker.cells(index, ts)))
    return "".join(lines).encode(), maker


class Filler:
    """Fixed-width padding rows for ``result_size``: one ~1 MiB block, written over and over."""

    def __init__(self, maker: RowMaker) -> None:
        self.maker = maker
        columns = maker.columns or ("description",)
        self.pad_column = next((c for c in _PAD_COLUMNS if c in columns), columns[-1])
        anchor = DEFAULT_DATA_AVAILABLE_START
        raw = [maker.cells(1_000_000_000 + i, anchor + i) for i in range(256)]
        plain = [len(maker.line(v).encode()) for v in raw]
        self.width = max(plain) + 1
        self.first, self.first_width = raw[0], plain[0]
        rows = b"".join(self.row(v, self.width) for v in raw)
        self.block = rows * max(1, _BLOCK_TARGET // len(rows))

    def row(self, values: Mapping[str, str], width: int) -> bytes:
        """A row padded to exactly ``width`` bytes."""
        plain = self.maker.line(values).encode()
        pad = width - len(plain)
        padded = dict(values)
        padded[self.pad_column] = values.get(self.pad_column, "") + " " * pad
        line = self.maker.line(padded).encode()
        if len(line) != width:  # quoting changed the length: pad after the quotes instead
            line = plain[:-1] + b" " * pad + b"\n"
        return line

    def pieces(self, total: int) -> Iterator[bytes | memoryview]:
        """Yield exactly ``total`` bytes of padding rows."""
        if total <= 0:
            return
        w = self.width
        if total < w:
            # Too little room for a padded row: blank lines, which CSV readers skip.
            yield self.row(self.first, total) if total >= self.first_width else b"\n" * total
            return
        # One head row absorbs the remainder, so everything after it is whole rows of width w.
        head = w + total % w
        yield self.row(self.first, head)
        rest = total - head
        block = memoryview(self.block)
        for _ in range(rest // len(block)):
            yield block
        if rest % len(block):
            yield block[: rest % len(block)]
