"""A local stand-in for Stripe's Reporting API (report runs, report types, result files).

Standard library only, so it runs under plain Python next to any Airflow version, and it
imports nothing else from this provider: the client is tested *against* it, not with it.

What it reproduces (API version 2023-08-16): form-encoded creates with Stripe's nested
``parameters[...]`` encoding and its 400 messages, per-type required parameters and data
availability, idempotency keys (replay, parameter mismatch, in-flight 409), ``Stripe-Account``
scoping, cursor-paginated lists, report types, result files served with an exact
``Content-Length``, and scripted faults (429/5xx, resets, slow, broken bodies) drawn from a
seeded random generator so a failing run replays exactly.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import http.server
import json
import math
import random
import re
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.utils import formatdate
from types import EllipsisType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "DEFAULT_DATA_AVAILABLE_START",
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_LIVE_ONLY_REPORT_TYPES",
    "FAULT_NAMES",
    "REPORT_TYPE_IDS",
    "REQUEST_KINDS",
    "Fault",
    "RunDelay",
    "SimulatorRequest",
    "StripeSimulator",
]

API_VERSION = "2023-08-16"
DEFAULT_API_KEY = "sk_test_simulator"
DEFAULT_DATA_AVAILABLE_START = 1577836800  # 2020-01-01T00:00:00Z
DEFAULT_FAILURE_MESSAGE = (
    "An unexpected error occurred while running this report. Please try again, "
    "and contact Stripe support (https://support.stripe.com/) if the problem persists."
)
REQUIRED_PERMISSION = "report_runs_and_report_types_read"
MAX_IDEMPOTENCY_KEY_LENGTH = 255

REQUEST_KINDS = (
    "create",
    "retrieve",
    "list",
    "report_types",
    "report_type",
    "file",
    "file_contents",
    "unknown",
)
FAULT_NAMES = (
    "429",
    "429_should_retry_true",
    "429_should_retry_false",
    "500",
    "502",
    "503",
    "500_should_retry_false",
    "reset",
    "slow",
    "bad_json",
    "truncated_json",
    "lost_response",
    "cut_download",
)

#: ``run_delay`` may be a number of seconds or ``(report_type, parameters, sequence_no) -> seconds``.
RunDelay = float | Callable[[str, Mapping[str, Any], int], float]

_BLOCK_TARGET = 1 << 20  # filler block size for padded result files
_MAX_NATURAL_ROWS = 2_000
_DOC_URL = "https://stripe.com/docs/error-codes"
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A scripted failure the simulator injects into matching requests.

    Faults are checked in the order they were added; the first whose ``kind`` matches, which has
    firings left (``times``) and whose draw from the simulator's seeded generator is below
    ``rate`` fires. Only that one applies to the request.

    :param kind: request kind it applies to (one of :data:`REQUEST_KINDS`) or ``"any"``.
    :param fault: one of :data:`FAULT_NAMES`:
        ``429`` / ``429_should_retry_true`` / ``429_should_retry_false`` (rate limited, before
        authentication and idempotency, so nothing is stored; the suffix sets
        ``Stripe-Should-Retry``), ``500`` / ``502`` / ``503`` / ``500_should_retry_false``
        (Stripe-shaped ``api_error``; nothing executed unless ``stored``), ``reset`` (the socket
        is reset without any response), ``slow`` (sleep ``delay`` seconds, then answer normally;
        for a create the sleep happens while the idempotency key is held, so a retry with the same
        key meanwhile gets 409), ``bad_json`` (200 with an HTML body), ``truncated_json`` (the
        normal response, executed and stored, but its body cut to ``fraction`` with a matching
        ``Content-Length``), ``lost_response`` (executed and stored, then the connection is closed
        without a response), ``cut_download`` (headers with the full ``Content-Length``, then
        ``fraction`` of the body, then the connection is closed).
    :param rate: probability in [0, 1] that a matching request triggers it.
    :param times: stop after firing this many times (``None``: no limit).
    :param delay: seconds to sleep for ``slow``.
    :param fraction: share of the body sent by ``truncated_json`` and ``cut_download``.
    :param stored: for 5xx faults on a create carrying an ``Idempotency-Key``: behave as if the
        endpoint had started executing and failed, so Stripe stores the 5xx under the key and
        replays it to any retry with the same key (no report run is created).
    """

    kind: str
    fault: str
    rate: float = 1.0
    times: int | None = None
    delay: float = 1.0
    fraction: float = 0.5
    stored: bool = False

    def __post_init__(self) -> None:
        if self.kind != "any" and self.kind not in REQUEST_KINDS:
            raise ValueError(f"Fault kind {self.kind!r} is not 'any' or one of {REQUEST_KINDS}")
        if self.fault not in FAULT_NAMES:
            raise ValueError(f"Fault {self.fault!r} is not one of {FAULT_NAMES}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Fault rate must be within [0, 1], got {self.rate}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"Fault times must be >= 0 or None, got {self.times}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"Fault fraction must be within [0, 1), got {self.fraction}")


@dataclass(frozen=True)
class SimulatorRequest:
    """One request as the simulator saw it (the API key itself is never recorded).

    :param seq: arrival order, starting at 0.
    :param kind: one of :data:`REQUEST_KINDS`.
    :param method: HTTP method.
    :param path: URL path without the query string.
    :param query: decoded query string, flat (``{"created[gte]": "1700000000"}``); last value wins.
    :param form: decoded POST body, nested the way Stripe reads it
        (``{"parameters": {"interval_start": "1", "columns": ["a"]}}``; values stay strings).
        If the body could not be decoded, the flat pairs as a dict.
    :param form_pairs: the POST body's ``(name, value)`` pairs exactly as sent.
    :param headers: ``Idempotency-Key``, ``Stripe-Account`` and ``Stripe-Version`` when sent.
    :param authorization_present: whether an ``Authorization`` header was sent.
    :param status: HTTP status answered, or ``None`` when no response was sent (``reset``,
        ``lost_response``).
    :param fault: name of the fault that fired for this request, or ``None``.
    :param timestamp: arrival time, ``time.time()`` (the simulator's ``clock``).
    :param replayed: the response was an idempotent replay.
    :param request_id: the ``Request-Id`` answered (``""`` when no response was sent).
    :param duration: seconds spent handling the request.
    :param run_id: the report run created or addressed, when there is one.
    :param account: the ``Stripe-Account`` the request acted for, ``None`` for the platform.
    :param client: the client's ``host:port``; equal values mean one kept-alive connection.
    """

    seq: int
    kind: str
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, Any]
    form_pairs: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    authorization_present: bool
    status: int | None
    fault: str | None
    timestamp: float
    replayed: bool
    request_id: str
    duration: float
    run_id: str | None
    account: str | None
    client: str


# --------------------------------------------------------------------------------------------
# Report types
# --------------------------------------------------------------------------------------------

_INTERVAL = frozenset({"interval_start", "interval_end"})
_SUMMARY_COLUMNS = ("reporting_category", "currency", "count", "gross", "fee", "net")
_ACTIVITY_COLUMNS = (
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
_ACTIVITY_LOCAL_COLUMNS = (
    "balance_transaction_id",
    "created",
    "available_on",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "description",
)
_PAYOUT_COLUMNS = (
    "payout_id",
    "effective_at_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "description",
)
_RECON_COLUMNS = ("automatic_payout_id", "automatic_payout_effective_at_utc", *_ACTIVITY_COLUMNS)
_RECON_LOCAL_COLUMNS = ("automatic_payout_id", "automatic_payout_effective_at", *_ACTIVITY_LOCAL_COLUMNS)


@dataclass(frozen=True)
class _ReportTypeSpec:
    id: str
    name: str
    required: frozenset[str]
    optional: frozenset[str]
    default_columns: tuple[str, ...] | None
    version: int
    shape: str  # "balance_summary", "summary" or "itemized": how result rows are generated


def _build_report_types() -> dict[str, _ReportTypeSpec]:
    base: list[tuple[str, str, frozenset[str], frozenset[str], tuple[str, ...], str]] = []

    def add(rid: str, name: str, req: Iterable[str], opt: Iterable[str], cols: tuple[str, ...], shape: str) -> None:
        base.append((rid, name, frozenset(req), frozenset(opt) | {"columns"}, cols, shape))

    add(
        "balance.summary.1",
        "Balance summary",
        _INTERVAL,
        {"timezone", "currency"},
        ("category", "description", "net_amount", "currency"),
        "balance_summary",
    )
    cat = {"currency", "reporting_category"}
    cols: tuple[str, ...]
    opt: set[str]
    for v in (1, 2, 3):
        cols = _ACTIVITY_LOCAL_COLUMNS if v == 3 else _ACTIVITY_COLUMNS
        if v == 2:
            cols = (*cols, "source_id")
        opt = cat | {"timezone"} if v == 3 else cat
        add(
            f"balance_change_from_activity.itemized.{v}",
            "Balance change from activity (itemized)",
            _INTERVAL,
            opt,
            cols,
            "itemized",
        )
    add(
        "balance_change_from_activity.summary.1",
        "Balance change from activity (summary)",
        _INTERVAL,
        cat,
        _SUMMARY_COLUMNS,
        "summary",
    )
    for v in (1, 2, 3):
        cols = _PAYOUT_COLUMNS if v == 1 else (*_PAYOUT_COLUMNS, "payout_expected_arrival_date", "payout_status")
        if v == 3:
            cols = tuple("effective_at" if c == "effective_at_utc" else c for c in cols)
        opt = cat | {"timezone"} if v == 3 else cat
        add(f"payouts.itemized.{v}", "Payouts (itemized)", _INTERVAL, opt, cols, "itemized")
    add("payouts.summary.1", "Payouts (summary)", _INTERVAL, cat, _SUMMARY_COLUMNS, "summary")
    for v in (1, 2, 3, 4, 5):
        cols = _RECON_LOCAL_COLUMNS if v >= 4 else _RECON_COLUMNS
        opt = cat | {"timezone"} if v >= 4 else cat
        add(
            f"payout_reconciliation.itemized.{v}",
            "Payout reconciliation (itemized)",
            _INTERVAL,
            opt,
            cols,
            "itemized",
        )
    add(
        "payout_reconciliation.summary.1",
        "Payout reconciliation (summary)",
        _INTERVAL,
        cat,
        _SUMMARY_COLUMNS,
        "summary",
    )
    for v in (1, 2, 3, 4):
        add(
            f"payout_reconciliation.by_id.itemized.{v}",
            "Payout reconciliation for a single payout (itemized)",
            {"payout"},
            {"reporting_category"},
            _RECON_COLUMNS,
            "itemized",
        )
    add(
        "payout_reconciliation.by_id.summary.1",
        "Payout reconciliation for a single payout (summary)",
        {"payout"},
        {"reporting_category"},
        _SUMMARY_COLUMNS,
        "summary",
    )
    for v in (1, 2, 3, 4):
        add(
            f"ending_balance_reconciliation.itemized.{v}",
            "Ending balance reconciliation (itemized)",
            {"interval_end"},
            cat,
            _RECON_COLUMNS,
            "itemized",
        )
    add(
        "ending_balance_reconciliation.summary.1",
        "Ending balance reconciliation (summary)",
        {"interval_end"},
        cat,
        _SUMMARY_COLUMNS,
        "summary",
    )

    specs: dict[str, _ReportTypeSpec] = {}
    for rid, name, req, optional, columns, shape in base:
        version = int(rid.rsplit(".", 1)[1])
        specs[rid] = _ReportTypeSpec(rid, name, req, optional, columns, version, shape)
        # Connect platforms get a connected_account_* twin of every type, filterable by account.
        twin = f"connected_account_{rid}"
        specs[twin] = _ReportTypeSpec(
            twin,
            f"Connected accounts: {name[0].lower()}{name[1:]}",
            req,
            optional | {"connected_account"},
            ("connected_account", *columns),
            version,
            shape,
        )
    return specs


_REPORT_TYPES = _build_report_types()
REPORT_TYPE_IDS: tuple[str, ...] = tuple(sorted(_REPORT_TYPES))
DEFAULT_LIVE_ONLY_REPORT_TYPES: tuple[str, ...] = tuple(r for r in REPORT_TYPE_IDS if r.startswith("connected_"))
_PARAMETER_NAMES = (
    "columns",
    "connected_account",
    "currency",
    "interval_end",
    "interval_start",
    "payout",
    "reporting_category",
    "timezone",
)
_INT_PARAMETERS = ("interval_start", "interval_end")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A Stripe-shaped error response, raised inside request handling."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = list(headers)

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"{_DOC_URL}/{self.code.replace('_', '-')}"
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error["type"] = self.type
        return {"error": error}


class _FormError(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _b62(data: bytes, length: int) -> str:
    # Callers pass enough entropy (>= 18 bytes for 24 characters) that no position is predictable.
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_ALNUM[r])
    return "".join(out)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _mask_key(key: str) -> str:
    """Mask a key the way Stripe quotes it in a 401: keep the prefix and the last 4 characters."""
    m = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", key)
    prefix, rest = (m.group(1), m.group(2)) if m else ("", key)
    if len(rest) <= 4:
        return prefix + "*" * len(rest)
    return prefix + "*" * (len(rest) - 4) + rest[-4:]


def _mask_restricted(key: str) -> str:
    m = re.match(r"^(rk_(?:test|live)_)(.*)$", key)
    prefix, rest = (m.group(1), m.group(2)) if m else ("", key)
    return f"{prefix}***{rest[-6:]}"


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe-style form pairs into nested dicts and lists.

    ``parameters[columns][0]=a`` becomes ``{"parameters": {"columns": ["a"]}}``; ``name[]``
    appends. A dict whose keys are all indices becomes a list ordered by index.

    :param pairs: ``(name, value)`` pairs in body order.
    :raises _FormError: for malformed names or a name used both as a value and as a container.
    """
    root: dict[str, Any] = {}
    append_no = 0
    for name, value in pairs:
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", name)
        if not m:
            raise _FormError(f"Invalid parameter name: {name}", name)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node = root
        for depth, part in enumerate(parts):
            if part == "":
                # "name[]" appends; keep arrival order with keys that sort after explicit indices.
                part = f"\x00{append_no:09d}"
                append_no += 1
            here = "".join(f"[{p}]" if i else p for i, p in enumerate(parts[: depth + 1]))
            if depth == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise _FormError(f"Invalid {_container_word(node[part])}", here)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise _FormError("Invalid object", here)
                node = child
    decoded: dict[str, Any] = _listify(root)
    return decoded


def _container_word(node: dict[str, Any]) -> str:
    return "array" if node and all(_is_index(k) for k in node) else "object"


def _is_index(key: str) -> bool:
    return key.isdigit() or key.startswith("\x00")


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(_is_index(k) for k in converted):
        ordered = sorted(converted, key=lambda k: (1, k) if k.startswith("\x00") else (0, f"{int(k):020d}"))
        return [converted[k] for k in ordered]
    return converted


# --------------------------------------------------------------------------------------------
# Result file content
# --------------------------------------------------------------------------------------------

_CATEGORIES = ("charge", "refund", "fee", "payout", "transfer", "dispute", "other_adjustment")
_TZ_CACHE: dict[str, Any] = {}
# Columns holding a time: (offset from the row's time in seconds, local time instead of UTC).
_TIME_COLUMNS = {
    "created_utc": (0, False),
    "created": (0, True),
    "available_on_utc": (2 * 86400, False),
    "available_on": (2 * 86400, True),
    "effective_at_utc": (86400, False),
    "effective_at": (86400, True),
    "automatic_payout_effective_at_utc": (86400, False),
    "automatic_payout_effective_at": (86400, True),
}
_FILLER_PARAMETERS = ("currency", "reporting_category", "timezone", "payout", "connected_account")
_PAD_COLUMNS = ("description", "reporting_category", "category", "balance_transaction_id", "payout_id")


def _local(ts: float, tz_name: str | None) -> str:
    if not tz_name:
        return _utc(ts)
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


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


class _RowMaker:
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
            if column in _TIME_COLUMNS:
                offset, local = _TIME_COLUMNS[column]
                values[column] = _local(ts + offset, self.tz) if local else _utc(ts + offset)
            elif column == "balance_transaction_id":
                values[column] = "txn_" + _b62(d[4:], 24)
            elif column == "source_id":
                values[column] = "ch_" + _b62(d[8:] + d[:8], 24)
            elif column in ("payout_id", "automatic_payout_id"):
                values[column] = self.parameters.get("payout") or "po_" + _b62(d[12:] + d[:12], 24)
            elif column == "connected_account":
                values[column] = self.parameters.get("connected_account") or "acct_" + _b62(d[16:] + d[:16], 16)
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
                values[column] = _utc(ts + 2 * 86400)[:10]
            else:
                values[column] = ""
        return values

    def line(self, values: Mapping[str, str]) -> str:
        return ",".join(_csv_field(values.get(c, "")) for c in self.columns) + "\n"


def _natural_content(spec: _ReportTypeSpec, parameters: Mapping[str, Any]) -> tuple[bytes, _RowMaker]:
    columns = list(parameters.get("columns") or spec.default_columns or ())
    maker = _RowMaker(spec.id, parameters, columns)
    lines = [",".join(_csv_field(c) for c in columns) + "\n"]
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
            ("starting_balance", f"Starting balance as of {_utc(s)}", opening),
            ("activity", "Activity", activity),
            ("payouts", "Payouts", payouts),
            ("ending_balance", f"Ending balance as of {_utc(e)}", opening + activity + payouts),
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


class _Filler:
    """Fixed-width padding rows for ``result_size``: one ~1 MiB block, written over and over."""

    def __init__(self, maker: _RowMaker) -> None:
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


# --------------------------------------------------------------------------------------------
# Server state
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    id: str
    seq: int
    account: str | None
    livemode: bool
    created: float
    report_type: str
    parameters: dict[str, Any]
    delay: float
    fails: bool
    file_id: str
    forced_status: str | None = None
    forced_at: float = 0.0
    forced_error: str | None = None
    content: bytes | None = None
    maker: _RowMaker | None = None


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    # A streamed body (result files): total length and a factory for the pieces.
    length: int | None = None
    stream: Callable[[], Iterator[bytes | memoryview]] | None = None

    @property
    def content_length(self) -> int:
        return self.length if self.length is not None else len(self.body)


@dataclass
class _IdempotencyEntry:
    fingerprint: str
    done: bool = False
    response: _Response | None = None
    request_id: str = ""
    run_id: str | None = None


@dataclass
class _Context:
    method: str
    path: str
    kind: str
    args: dict[str, str]
    query_pairs: list[tuple[str, str]]
    form_pairs: list[tuple[str, str]]
    headers: Message  # case-insensitive, as clients spell header names as they like
    request_id: str
    account: str | None = None
    livemode: bool = False
    replayed: bool = False
    run_id: str | None = None


_ROUTES = (
    ("POST", re.compile(r"/v1/reporting/report_runs/?"), "create"),
    ("GET", re.compile(r"/v1/reporting/report_runs/?"), "list"),
    ("GET", re.compile(r"/v1/reporting/report_runs/(?P<id>[^/]+)/?"), "retrieve"),
    ("GET", re.compile(r"/v1/reporting/report_types/?"), "report_types"),
    ("GET", re.compile(r"/v1/reporting/report_types/(?P<id>[^/]+)/?"), "report_type"),
    ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)/contents/?"), "file_contents"),
    ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)/?"), "file"),
)


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    for m, pattern, kind in _ROUTES:
        match = pattern.fullmatch(path)
        if match and m == method:
            return kind, match.groupdict()
    return "unknown", {}


class StripeSimulator:
    """An in-process HTTP server that answers like Stripe's Reporting API.

    Use it as a context manager (``with StripeSimulator() as sim: ...``) or call
    :meth:`start` / :meth:`stop`. Point a client at :attr:`url` with :attr:`api_key`.

    :param api_key: the secret key clients must send (``sk_test_`` keys run in test mode,
        ``sk_live_`` in live mode).
    :param host: interface to listen on.
    :param port: TCP port; 0 picks a free one.
    :param run_delay: seconds a report run stays ``pending`` before it finishes, or a callable
        ``(report_type, parameters, sequence_no) -> seconds`` (called once per run at creation,
        under the simulator's lock, so keep it cheap); ``sequence_no`` counts runs from 0.
    :param fail_report_types: runs of these report types end ``failed``.
    :param failure_message: the ``error`` text of failed runs.
    :param live_only_report_types: report types that need a live-mode key (creating a run, or
        retrieving the type, with a test key answers 400).
    :param restricted_keys: restricted ``rk_`` keys mapped to whether they hold the
        ``report_runs_and_report_types_read`` permission; without it they get 403.
    :param result_size: make every result file exactly this many bytes (real rows first, then
        deterministic filler rows generated on the fly); ``None`` keeps the natural size.
    :param file_ttl: result files expire this many seconds after the run succeeded (after which
        downloads answer 404); ``None`` gives ``expires_at: null`` and no expiry.
    :param data_available_start: first instant with data, for every report type.
    :param data_available_end: last instant with data for every report type; ``None`` follows
        the start of the current UTC day. See :meth:`set_data_available_end`.
    :param seed: seeds the fault draws and generated ids, so a run replays exactly.
    :param faults: initial faults, see :class:`Fault`.
    :param public_url: base URL advertised in result file URLs, when clients reach the simulator
        under another address (a container); defaults to :attr:`url`.
    :param clock: the simulator's notion of "now" in unix seconds (``created``, run completion,
        file expiry, the default end of available data, the request log); tests can pass a fake
        clock to move time without sleeping. ``slow`` faults still sleep in real time.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        run_delay: RunDelay = 0.0,
        fail_report_types: Iterable[str] = (),
        failure_message: str = DEFAULT_FAILURE_MESSAGE,
        live_only_report_types: Iterable[str] = DEFAULT_LIVE_ONLY_REPORT_TYPES,
        restricted_keys: Mapping[str, bool] | None = None,
        result_size: int | None = None,
        file_ttl: float | None = 3600.0,
        data_available_start: int = DEFAULT_DATA_AVAILABLE_START,
        data_available_end: int | None = None,
        seed: int = 0,
        faults: Sequence[Fault] = (),
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if result_size is not None and result_size < 0:
            raise ValueError("result_size must be >= 0 or None")
        self.api_key = api_key
        self.host = host
        self.port = port
        self.run_delay = run_delay
        self.fail_report_types = frozenset(fail_report_types)
        self.failure_message = failure_message
        self.live_only_report_types = frozenset(live_only_report_types)
        self.restricted_keys = dict(restricted_keys or {})
        self.result_size = result_size
        self.file_ttl = file_ttl
        self.data_available_start = int(data_available_start)
        self.seed = seed
        self._public_url = public_url.rstrip("/") if public_url else None
        self._clock = clock
        self.account_id = "acct_1" + _b62(hashlib.blake2b(f"{seed}:account".encode()).digest(), 15)

        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults: list[Fault] = list(faults)
        self._fault_fired: list[int] = [0] * len(self._faults)
        self._fault_counts: dict[str, int] = {}
        self._data_end_all: int | None = None if data_available_end is None else int(data_available_end)
        self._data_end: dict[str, int] = {}
        self._runs: dict[str, _Run] = {}
        self._files: dict[str, str] = {}
        self._idempotency: dict[tuple[bool, str | None, str], _IdempotencyEntry] = {}
        self._log: list[SimulatorRequest] = []
        self._arrivals = 0
        self._cleared = 0  # records dropped by clear_requests(), so requests() can still settle
        self._run_seq = 0
        self._request_no = 0
        self._fillers: dict[tuple[Any, ...], _Filler] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> StripeSimulator:
        """Bind and serve in a background thread.

        :returns: the simulator itself, started.
        """
        if self._server is not None:
            raise RuntimeError("StripeSimulator is already started")
        server = _Server((self.host, self.port), _Handler)
        server.simulator = self
        self.port = server.server_address[1]
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_until_woken, name="stripe-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (idle keep-alive ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        server.close_connections()
        server.server_close()

    def __enter__(self) -> StripeSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """API base URL, e.g. ``http://127.0.0.1:54321``; also serves the result files."""
        if self._server is None and self.port == 0:
            raise RuntimeError("StripeSimulator is not started yet")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def public_url(self) -> str:
        """The base URL written into result file URLs (``public_url`` or :attr:`url`)."""
        return self._public_url or self.url

    # ---------------------------------------------------------------- test controls

    def report_runs(self, account: str | EllipsisType | None = ...) -> list[dict[str, Any]]:
        """All report runs as Stripe would return them now, oldest first.

        :param account: only runs of this ``Stripe-Account`` (``None``: the platform's own);
            by default runs of every account.
        """
        now = self._clock()
        with self._lock:
            runs = [r for r in self._runs.values() if account is ... or r.account == account]
        return [self._render_run(r, now) for r in runs]

    def report_run(self, run_id: str) -> dict[str, Any]:
        """One report run as Stripe would return it now.

        :param run_id: the ``frr_`` id.
        :raises KeyError: unknown id.
        """
        return self._render_run(self._get_run(run_id), self._clock())

    def requests(self, settle: float = 0.5) -> list[SimulatorRequest]:
        """Finished requests in arrival order (requests still being answered are not listed).

        A request is recorded just after its response is written, so a client can hold the
        response before the log has it; wait up to ``settle`` seconds for every request that
        arrived to be recorded, so a test reading the log right after a call sees that call.
        """
        deadline = time.monotonic() + settle
        while True:
            with self._lock:
                if len(self._log) + self._cleared >= self._arrivals or time.monotonic() >= deadline:
                    return sorted(self._log, key=lambda r: r.seq)
            time.sleep(0.002)

    def clear_requests(self) -> None:
        """Forget the request log (for long benchmarks)."""
        self.requests()  # let requests already answered be recorded, so they are cleared too
        with self._lock:
            self._cleared += len(self._log)
            self._log.clear()

    def set_data_available_end(self, end: int, report_type: str | None = None) -> None:
        """Move the end of available data, as Stripe's twice-daily refresh does.

        :param end: unix seconds.
        :param report_type: one report type, or ``None`` for every type (which also drops earlier
            per-type settings).
        """
        with self._lock:
            if report_type is None:
                self._data_end_all = int(end)
                self._data_end.clear()
            else:
                if report_type not in _REPORT_TYPES:
                    raise KeyError(report_type)
                self._data_end[report_type] = int(end)

    def data_available_end(self, report_type: str) -> int:
        """The current end of available data for a report type (unix seconds).

        :param report_type: a report type id.
        """
        with self._lock:
            return self._data_end_for(report_type)

    def finish_report_run(self, run_id: str, status: str = "succeeded", error: str | None = None) -> None:
        """Force a report run into a state now, whatever its delay.

        :param run_id: the ``frr_`` id.
        :param status: ``succeeded``, ``failed``, ``pending`` (stays pending) or any other string,
            which Stripe-side code should treat as "not finished".
        :param error: the ``error`` text; a failed run without one gets ``failure_message``.
        :raises KeyError: unknown id.
        """
        with self._lock:
            run = self._runs[run_id]
            if status == "failed" and error is None:
                error = self.failure_message
            # Readers do not take the lock: publish the status last, after the fields it implies.
            run.forced_at = self._clock()
            run.forced_error = error
            run.forced_status = status

    def succeeded_at(self, run_id: str) -> float:
        """When the server considers the run finished (float unix time), even if still in the future.

        For a run that ends ``failed`` this is when it failed; for a run forced into a
        non-terminal status, ``math.inf``.

        :param run_id: the ``frr_`` id.
        :raises KeyError: unknown id.
        """
        run = self._get_run(run_id)
        if run.forced_status is not None:
            return run.forced_at if run.forced_status in ("succeeded", "failed") else math.inf
        return run.created + run.delay

    def result_content(self, run_id: str) -> bytes:
        """The exact bytes the result file URL of a run serves (whole file in memory).

        :param run_id: the ``frr_`` id; the content exists whatever the run's status.
        :raises KeyError: unknown id.
        """
        return b"".join(bytes(p) for p in self._content_pieces(self._get_run(run_id)))

    def iter_result_content(self, run_id: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The result file bytes in chunks of at most ``chunk`` bytes, without holding the file.

        :param run_id: the ``frr_`` id.
        :param chunk: maximum chunk size.
        """
        for piece in self._content_pieces(self._get_run(run_id)):
            view = memoryview(piece)
            for i in range(0, len(view), chunk):
                yield bytes(view[i : i + chunk])

    def result_size_of(self, run_id: str) -> int:
        """Size in bytes of a run's result file.

        :param run_id: the ``frr_`` id.
        """
        return self._content_length(self._get_run(run_id))

    def add_fault(self, fault: Fault) -> None:
        """Append a fault (checked after the existing ones).

        :param fault: the fault.
        """
        with self._lock:
            self._faults.append(fault)
            self._fault_fired.append(0)

    def clear_faults(self) -> None:
        """Remove every fault; :attr:`fault_counts` keeps its history."""
        with self._lock:
            self._faults.clear()
            self._fault_fired.clear()

    @property
    def fault_counts(self) -> dict[str, int]:
        """How many times each fault name fired so far (a copy)."""
        with self._lock:
            return dict(self._fault_counts)

    # ---------------------------------------------------------------- internals: state

    def _get_run(self, run_id: str) -> _Run:
        with self._lock:
            return self._runs[run_id]

    def _data_end_for(self, report_type: str) -> int:
        if report_type in self._data_end:
            return self._data_end[report_type]
        if self._data_end_all is not None:
            return self._data_end_all
        return int(self._clock()) // 86400 * 86400

    def _next_request_id(self) -> str:
        with self._lock:
            self._request_no += 1
            n = self._request_no
        return "req_" + _b62(hashlib.blake2b(f"{self.seed}:req:{n}".encode(), digest_size=12).digest(), 14)

    def _pick_fault(self, kind: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.kind not in ("any", kind):
                    continue
                if fault.times is not None and self._fault_fired[index] >= fault.times:
                    continue
                # Draw for every candidate, so the sequence depends only on the request order.
                if self._rng.random() < fault.rate:
                    self._fault_fired[index] += 1
                    self._fault_counts[fault.fault] = self._fault_counts.get(fault.fault, 0) + 1
                    return fault
        return None

    def _record(self, entry: SimulatorRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _arrival(self) -> int:
        with self._lock:
            n = self._arrivals
            self._arrivals += 1
            return n

    def _run_state(self, run: _Run, now: float, creating: bool = False) -> tuple[str, float | None, str | None]:
        if run.forced_status is not None:
            status = run.forced_status
            return status, run.forced_at if status == "succeeded" else None, run.forced_error
        done_at = run.created + run.delay
        # Stripe answers a create with a pending run, even when the report is instant here.
        if creating or now < done_at:
            return "pending", None, None
        if run.fails:
            return "failed", None, self.failure_message
        return "succeeded", done_at, None

    def _render_run(self, run: _Run, now: float, creating: bool = False) -> dict[str, Any]:
        status, succeeded, error = self._run_state(run, now, creating)
        result = self._render_file(run, succeeded) if succeeded is not None else None
        return {
            "id": run.id,
            "object": "reporting.report_run",
            "created": int(run.created),
            "error": error,
            "livemode": run.livemode,
            "parameters": json.loads(json.dumps(run.parameters)),
            "report_type": run.report_type,
            "result": result,
            "status": status,
            "succeeded_at": int(succeeded) if succeeded is not None else None,
        }

    def _render_file(self, run: _Run, succeeded: float) -> dict[str, Any]:
        return {
            "id": run.file_id,
            "object": "file",
            "created": int(succeeded),
            "expires_at": None if self.file_ttl is None else int(succeeded + self.file_ttl),
            "filename": f"{run.id}.csv",
            "links": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/file_links?file={run.file_id}",
            },
            "purpose": "finance_report_run",
            "size": self._content_length(run),
            "title": f"FinanceReportRun {run.id}",
            "type": "csv",
            "url": f"{self.public_url}/v1/files/{run.file_id}/contents",
        }

    def _natural(self, run: _Run) -> tuple[bytes, _RowMaker]:
        # Generated outside the lock; two threads racing compute the same bytes.
        if run.content is None or run.maker is None:
            run.content, run.maker = _natural_content(_REPORT_TYPES[run.report_type], run.parameters)
        return run.content, run.maker

    def _content_length(self, run: _Run) -> int:
        if self.result_size is not None:
            return self.result_size
        return len(self._natural(run)[0])

    def _content_pieces(self, run: _Run) -> Iterator[bytes | memoryview]:
        natural, maker = self._natural(run)
        if self.result_size is None:
            yield natural
            return
        if len(natural) >= self.result_size:
            yield natural[: self.result_size]
            return
        yield natural
        # Filler depends only on what shapes a row, so one block serves many runs (and a run's
        # bytes never depend on which run built the cached block first).
        shaping = {k: v for k, v in maker.parameters.items() if k in _FILLER_PARAMETERS}
        key = (run.report_type, maker.columns, json.dumps(shaping, sort_keys=True))
        with self._lock:
            filler = self._fillers.get(key)
        if filler is None:
            filler = _Filler(_RowMaker(run.report_type, shaping, maker.columns))
            with self._lock:
                if len(self._fillers) >= 8:
                    self._fillers.pop(next(iter(self._fillers)))
                self._fillers[key] = filler
        yield from filler.pieces(self.result_size - len(natural))

    # ---------------------------------------------------------------- internals: requests

    def _authenticate(self, ctx: _Context) -> None:
        header = ctx.headers.get("Authorization", "").strip()
        if not header:
            raise _ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at "
                "https://support.stripe.com/.",
            )
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        key = credential
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        elif scheme.lower() != "bearer":
            key = header
        if key.startswith("pk_") and key != self.api_key:
            raise _ApiError(
                401,
                "This API call cannot be made with a publishable API key. Please use a secret API key. "
                "You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys.",
            )
        if key == self.api_key:
            allowed = True
        elif key in self.restricted_keys:
            allowed = bool(self.restricted_keys[key])
        else:
            raise _ApiError(401, f"Invalid API Key provided: {_mask_key(key)}")
        ctx.livemode = key.startswith(("sk_live_", "rk_live_"))
        if not allowed:
            raise _ApiError(
                403,
                f"The provided key '{_mask_restricted(key)}' does not have the required permissions for "
                f"this endpoint on account '{ctx.account or self.account_id}'. Having the "
                f"'{REQUIRED_PERMISSION}' permission would allow this request to continue.",
            )

    def _handle(self, ctx: _Context, fault: Fault | None) -> _Response:
        """Answer one request (faults that replace the response were applied by the caller)."""
        if ctx.kind == "unknown":
            raise _ApiError(
                404,
                f"Unrecognized request URL ({ctx.method}: {ctx.path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
            )
        self._authenticate(ctx)
        if ctx.kind == "create":
            return self._create(ctx, fault)
        if fault is not None and fault.fault == "slow":
            self._stopping.wait(fault.delay)
        if ctx.kind == "file_contents":
            return self._file_contents(ctx)
        query = self._decode_query(ctx)
        if ctx.kind == "list":
            return _json(200, self._list(ctx, query))
        self._only_expand(query)
        if ctx.kind == "retrieve":
            return _json(200, self._retrieve(ctx))
        if ctx.kind == "report_types":
            return _json(200, self._report_types(ctx))
        if ctx.kind == "report_type":
            return _json(200, self._report_type(ctx, ctx.args["id"]))
        if ctx.kind == "file":
            run = self._file_run(ctx)
            _, succeeded, _ = self._run_state(run, self._clock())
            assert succeeded is not None
            return _json(200, self._render_file(run, succeeded))
        raise AssertionError(ctx.kind)

    # -- create

    def _create(self, ctx: _Context, fault: Fault | None) -> _Response:
        key = ctx.headers.get("Idempotency-Key")
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise _ApiError(
                400,
                f"Invalid Idempotency-Key: keys may be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters "
                f"long, but the one provided has {len(key)}.",
                param="Idempotency-Key",
            )
        try:
            form: Any = decode_form(ctx.form_pairs)
            form_error: _FormError | None = None
        except _FormError as exc:
            form, form_error = sorted(ctx.form_pairs), exc
        fingerprint = json.dumps(form, sort_keys=True)
        slot: tuple[bool, str | None, str] | None = None
        if key is not None:
            slot = (ctx.livemode, ctx.account, key)
            with self._lock:
                entry = self._idempotency.get(slot)
                if entry is None:
                    self._idempotency[slot] = _IdempotencyEntry(fingerprint)
            if entry is not None:
                if entry.fingerprint != fingerprint:
                    raise _ApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.",
                        type="idempotency_error",
                    )
                if not entry.done or entry.response is None:
                    raise _ApiError(
                        409,
                        "There is currently another in-progress request using this Idempotent Key (that "
                        "probably means you submitted twice, and the other request is still going "
                        f"through): {key}. Please try again later.",
                        type="idempotency_error",
                        code="idempotency_key_in_use",
                    )
                ctx.replayed = True
                ctx.run_id = entry.run_id
                stored = entry.response
                headers = [h for h in stored.headers if h[0] not in ("Request-Id", "Original-Request")]
                headers += [("Idempotent-Replayed", "true"), ("Original-Request", entry.request_id)]
                return _Response(stored.status, headers, stored.body)
        try:
            # Parameter validation happens before the endpoint executes, so Stripe stores nothing.
            if form_error is not None:
                raise _ApiError(400, form_error.message, param=form_error.param)
            report_type, parameters = self._check_create_shape(form)
        except _ApiError:
            if slot is not None:
                with self._lock:
                    self._idempotency.pop(slot, None)
            raise
        if fault is not None and fault.fault == "slow":
            self._stopping.wait(fault.delay)
        try:
            if fault is not None and fault.stored and fault.fault in ("500", "502", "503", "500_should_retry_false"):
                response = _fault_response(fault.fault, ctx.request_id)
            else:
                run = self._execute_create(ctx, report_type, parameters)
                response = _json(200, self._render_run(run, run.created, creating=True))
        except _ApiError as exc:
            response = _error_response(exc, ctx.request_id)
        except BaseException:
            if slot is not None:
                with self._lock:
                    self._idempotency.pop(slot, None)
            raise
        if key is not None:
            response.headers.append(("Idempotency-Key", key))
        if slot is not None:
            with self._lock:
                entry = self._idempotency[slot]
                entry.done, entry.response, entry.request_id, entry.run_id = (
                    True,
                    response,
                    ctx.request_id,
                    ctx.run_id,
                )
        return response

    def _check_create_shape(self, form: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        for name in form:
            if name not in ("report_type", "parameters", "expand"):
                raise _ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
        raw = form.get("parameters", {})
        if not isinstance(raw, dict):
            raise _ApiError(400, "Invalid object", code="parameter_invalid_object", param="parameters")
        for name in raw:
            if name not in _PARAMETER_NAMES:
                param = f"parameters[{name}]"
                raise _ApiError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)
        expand = form.get("expand", [])
        if not isinstance(expand, list) or not all(isinstance(x, str) for x in expand):
            raise _ApiError(400, "Invalid array", code="parameter_invalid_array", param="expand")
        parameters: dict[str, Any] = {}
        for name, value in raw.items():
            param = f"parameters[{name}]"
            if name == "columns":
                if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                    raise _ApiError(400, "Invalid array", code="parameter_invalid_array", param=param)
                parameters[name] = list(value)
            elif not isinstance(value, str):
                raise _ApiError(400, "Invalid string", code="parameter_invalid_string", param=param)
            elif name in _INT_PARAMETERS:
                if not re.fullmatch(r"-?\d+", value.strip()):
                    raise _ApiError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)
                parameters[name] = int(value)
            else:
                parameters[name] = value
        report_type = form.get("report_type")
        if report_type is None or report_type == "":
            raise _ApiError(400, "Missing required param: report_type.", code="parameter_missing", param="report_type")
        if not isinstance(report_type, str):
            raise _ApiError(400, "Invalid string", code="parameter_invalid_string", param="report_type")
        return report_type, parameters

    def _execute_create(self, ctx: _Context, report_type: str, parameters: dict[str, Any]) -> _Run:
        spec = _REPORT_TYPES.get(report_type)
        if spec is None:
            raise _ApiError(
                400,
                f"Invalid report_type: `{report_type}` is not a valid report type. See "
                "https://stripe.com/docs/reporting/statements/api#report-types for the available types.",
                param="report_type",
            )
        self._check_live_only(ctx, report_type)
        for name in sorted(parameters):
            if name not in spec.required and name not in spec.optional:
                param = f"parameters[{name}]"
                raise _ApiError(
                    400,
                    f"The report type {report_type} does not accept the parameter `{name}`.",
                    code="parameter_unknown",
                    param=param,
                )
        for name in sorted(spec.required):
            if name not in parameters:
                raise _ApiError(
                    400,
                    f"Missing required param: parameters[{name}].",
                    code="parameter_missing",
                    param=f"parameters[{name}]",
                )
        start, end = parameters.get("interval_start"), parameters.get("interval_end")
        if start is not None and end is not None and start >= end:
            raise _ApiError(
                400,
                f"`interval_start` ({_utc(start)} UTC) must be before `interval_end` ({_utc(end)} UTC).",
                param="parameters[interval_start]",
            )
        with self._lock:
            avail_start, avail_end = self.data_available_start, self._data_end_for(report_type)
        for name, value in (("interval_start", start), ("interval_end", end)):
            if value is None:
                continue
            if value < avail_start:
                raise _ApiError(
                    400,
                    f"Data for the report type {report_type} is only available starting from "
                    f"{_utc(avail_start)} UTC; you requested `{name}` = {_utc(value)} UTC.",
                    param=f"parameters[{name}]",
                )
            if value > avail_end:
                raise _ApiError(
                    400,
                    f"Data for the report type {report_type} is only available through "
                    f"{_utc(avail_end)} UTC; you requested `{name}` = {_utc(value)} UTC.",
                    param=f"parameters[{name}]",
                )
        now = self._clock()
        with self._lock:
            seq = self._run_seq
            self._run_seq += 1
            delay = self.run_delay(report_type, dict(parameters), seq) if callable(self.run_delay) else self.run_delay
            digest = hashlib.blake2b(f"{self.seed}:run:{seq}".encode(), digest_size=64).digest()
            run = _Run(
                id="frr_" + _b62(digest[:32], 24),
                seq=seq,
                account=ctx.account,
                livemode=ctx.livemode,
                created=now,
                report_type=report_type,
                parameters=parameters,
                delay=max(0.0, float(delay)),
                fails=report_type in self.fail_report_types,
                file_id="file_" + _b62(digest[32:], 24),
            )
            self._runs[run.id] = run
            self._files[run.file_id] = run.id
        ctx.run_id = run.id
        return run

    def _check_live_only(self, ctx: _Context, report_type: str) -> None:
        if report_type in self.live_only_report_types and not ctx.livemode:
            raise _ApiError(
                400,
                f"The report type {report_type} is only available with live-mode data; a live-mode API "
                "key is required (see https://stripe.com/docs/keys#test-live-modes).",
                param="report_type",
            )

    # -- reads

    def _decode_query(self, ctx: _Context) -> dict[str, Any]:
        try:
            return decode_form(ctx.query_pairs)
        except _FormError as exc:
            raise _ApiError(400, exc.message, param=exc.param) from None

    @staticmethod
    def _only_expand(query: Mapping[str, Any]) -> None:
        for name in query:
            if name != "expand":
                raise _ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)

    def _visible(self, ctx: _Context, run: _Run) -> bool:
        return run.account == ctx.account and run.livemode == ctx.livemode

    def _retrieve(self, ctx: _Context) -> dict[str, Any]:
        run_id = ctx.args["id"]
        with self._lock:
            run = self._runs.get(run_id)
        if run is None or not self._visible(ctx, run):
            raise _ApiError(404, f"No such reporting.report_run: '{run_id}'", code="resource_missing", param="id")
        ctx.run_id = run.id
        return self._render_run(run, self._clock())

    def _list(self, ctx: _Context, query: dict[str, Any]) -> dict[str, Any]:
        for name in query:
            if name not in ("created", "limit", "starting_after", "ending_before", "expand"):
                raise _ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
        bounds: dict[str, int] = {}
        created = query.get("created")
        if isinstance(created, dict):
            for op, value in created.items():
                if op not in ("gt", "gte", "lt", "lte"):
                    param = f"created[{op}]"
                    raise _ApiError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)
                bounds[op] = _parse_int(value, f"created[{op}]")
        elif created is not None:
            bounds["eq"] = _parse_int(created, "created")
        limit = 10
        if "limit" in query:
            limit = _parse_int(query["limit"], "limit")
            if limit < 1:
                raise _ApiError(400, "This value must be greater than or equal to 1.", param="limit")
            if limit > 100:
                raise _ApiError(400, "This value must be less than or equal to 100.", param="limit")
        after, before = query.get("starting_after"), query.get("ending_before")
        if after is not None and before is not None:
            raise _ApiError(400, "You may only specify one of these parameters: ending_before, starting_after.")
        for name, value in (("starting_after", after), ("ending_before", before)):
            if value is not None and not isinstance(value, str):
                raise _ApiError(400, "Invalid string", code="parameter_invalid_string", param=name)
        checks: dict[str, Callable[[int, int], bool]] = {
            "eq": lambda c, v: c == v,
            "gt": lambda c, v: c > v,
            "gte": lambda c, v: c >= v,
            "lt": lambda c, v: c < v,
            "lte": lambda c, v: c <= v,
        }
        with self._lock:
            scoped = [r for r in self._runs.values() if self._visible(ctx, r)]
            cursor_id = after or before
            cursor = self._runs.get(cursor_id) if cursor_id else None
        if cursor_id and (cursor is None or not self._visible(ctx, cursor)):
            raise _ApiError(
                404,
                f"No such reporting.report_run: '{cursor_id}'",
                code="resource_missing",
                param="starting_after" if after else "ending_before",
            )
        runs = [r for r in scoped if all(checks[op](int(r.created), v) for op, v in bounds.items())]
        # Newest first; the creation sequence breaks ties within a second, so paging is stable.
        runs.sort(key=lambda r: (int(r.created), r.seq), reverse=True)
        if cursor is not None:
            mark = (int(cursor.created), cursor.seq)
            if after:
                older = [r for r in runs if (int(r.created), r.seq) < mark]
                page, has_more = older[:limit], len(older) > limit
            else:
                newer = [r for r in runs if (int(r.created), r.seq) > mark]
                page, has_more = newer[-limit:], len(newer) > limit
        else:
            page, has_more = runs[:limit], len(runs) > limit
        now = self._clock()
        return {
            "object": "list",
            "data": [self._render_run(r, now) for r in page],
            "has_more": has_more,
            "url": "/v1/reporting/report_runs",
        }

    def _render_type(self, spec: _ReportTypeSpec, livemode: bool) -> dict[str, Any]:
        with self._lock:
            end = self._data_end_for(spec.id)
        return {
            "id": spec.id,
            "object": "reporting.report_type",
            "data_available_end": end,
            "data_available_start": self.data_available_start,
            "default_columns": list(spec.default_columns) if spec.default_columns is not None else None,
            "livemode": livemode,
            "name": spec.name,
            "updated": max(end, self.data_available_start),
            "version": spec.version,
        }

    def _report_types(self, ctx: _Context) -> dict[str, Any]:
        visible = [
            spec
            for rid, spec in sorted(_REPORT_TYPES.items())
            if ctx.livemode or rid not in self.live_only_report_types
        ]
        return {
            "object": "list",
            "data": [self._render_type(spec, ctx.livemode) for spec in visible],
            "has_more": False,
            "url": "/v1/reporting/report_types",
        }

    def _report_type(self, ctx: _Context, report_type: str) -> dict[str, Any]:
        spec = _REPORT_TYPES.get(report_type)
        if spec is None:
            raise _ApiError(
                404,
                f"No such reporting.report_type: '{report_type}'",
                code="resource_missing",
                param="report_type",
            )
        self._check_live_only(ctx, report_type)
        return self._render_type(spec, ctx.livemode)

    def _file_run(self, ctx: _Context) -> _Run:
        file_id = ctx.args["id"]
        now = self._clock()
        with self._lock:
            run = self._runs.get(self._files.get(file_id, ""))
        missing = _ApiError(404, f"No such file upload: '{file_id}'", code="resource_missing", param="file")
        if run is None or not self._visible(ctx, run):
            raise missing
        _, succeeded, _ = self._run_state(run, now)
        if succeeded is None:
            raise missing
        ctx.run_id = run.id
        if self.file_ttl is not None and now >= succeeded + self.file_ttl:
            raise _ApiError(
                404,
                f"The file {file_id} has expired and is no longer available.",
                code="resource_missing",
                param="file",
            )
        return run

    def _file_contents(self, ctx: _Context) -> _Response:
        run = self._file_run(ctx)
        headers = [("Content-Type", "text/csv"), ("Content-Disposition", f'attachment; filename="{run.id}.csv"')]
        return _Response(200, headers, length=self._content_length(run), stream=lambda: self._content_pieces(run))


def _parse_int(value: Any, param: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value.strip()):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise _ApiError(400, f"Invalid integer: {shown}", code="parameter_invalid_integer", param=param)
    return int(value)


def _json(status: int, payload: Any) -> _Response:
    body = json.dumps(payload, indent=2).encode()
    return _Response(status, [("Content-Type", "application/json")], body)


def _error_response(error: _ApiError, request_id: str) -> _Response:
    response = _json(error.status, error.body(request_id))
    response.headers.extend(error.headers)
    return response


def _fault_response(name: str, request_id: str) -> _Response:
    if name.startswith("429"):
        headers = []
        if name != "429":
            headers.append(("Stripe-Should-Retry", name.rsplit("_", 1)[1]))
        error = _ApiError(
            429,
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
            headers=headers,
        )
        return _error_response(error, request_id)
    status = int(name[:3])
    headers = [("Stripe-Should-Retry", "false")] if name.endswith("should_retry_false") else []
    text = {
        500: "An unknown error occurred. We've already been notified of the problem, but if you need any "
        "help, you can reach us at support.stripe.com/contact.",
        502: "The API is temporarily unreachable (bad gateway). Please retry your request.",
        503: "The API is temporarily unavailable. Please retry your request in a moment.",
    }[status]
    return _error_response(_ApiError(status, text, type="api_error", headers=headers), request_id)


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Hundreds of clients connect at once in benchmarks; the default backlog of 5 would turn
    # that burst into SYN retries of a second or more.
    request_queue_size = 1024
    simulator: StripeSimulator

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()

    def serve_until_woken(self) -> None:
        """Accept connections until :meth:`wake`.

        serve_forever() only notices shutdown() at its next poll, which made every stop() (one per
        test) cost up to a poll interval; a socketpair wakes the selector at once instead.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                self.handle_request()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        # Idle keep-alive handlers would otherwise keep answering after stop().
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds on a
        # machine without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # clients going away mid-response are routine here
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it every keep-alive response waits ~40 ms on delayed ACK over loopback.
    disable_nagle_algorithm = True
    server_version = "stripe-simulator"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is sim.requests(); stderr noise would swamp benchmarks

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        sim = self.server.simulator
        started, clock = sim._clock(), time.perf_counter()
        seq = sim._arrival()
        split = urlsplit(self.path)
        path = split.path
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        kind, args = _route(method, path)
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        form_pairs: list[tuple[str, str]] = []
        if method == "POST" and body:
            form_pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        logged = {
            name: value
            for name in ("Idempotency-Key", "Stripe-Account", "Stripe-Version")
            if (value := self.headers.get(name)) is not None
        }
        ctx = _Context(
            method=method,
            path=path,
            kind=kind,
            args=args,
            query_pairs=query_pairs,
            form_pairs=form_pairs,
            headers=self.headers,
            request_id=sim._next_request_id(),
            account=self.headers.get("Stripe-Account") or None,
        )
        fault = sim._pick_fault(kind)
        name = fault.fault if fault else None
        status: int | None = None
        try:
            status = self._respond(sim, ctx, fault)
        finally:
            try:
                form: dict[str, Any] = decode_form(form_pairs)
            except _FormError:
                form = dict(form_pairs)
            sim._record(
                SimulatorRequest(
                    seq=seq,
                    kind=kind,
                    method=method,
                    path=path,
                    query=dict(query_pairs),
                    form=form,
                    form_pairs=tuple(form_pairs),
                    headers=logged,
                    authorization_present="Authorization" in self.headers,
                    status=status,
                    fault=name,
                    timestamp=started,
                    replayed=ctx.replayed,
                    request_id=ctx.request_id if status is not None else "",
                    duration=time.perf_counter() - clock,
                    run_id=ctx.run_id,
                    account=ctx.account,
                    client=f"{self.client_address[0]}:{self.client_address[1]}",
                )
            )

    def _respond(self, sim: StripeSimulator, ctx: _Context, fault: Fault | None) -> int | None:
        """Produce and send the response; returns the status sent, or None if none was."""
        name = fault.fault if fault else None
        if name == "reset":
            self._reset()
            return None
        pre_execution_5xx = name in ("500", "502", "503", "500_should_retry_false") and not (
            fault is not None and fault.stored and ctx.kind == "create" and "Idempotency-Key" in ctx.headers
        )
        if name is not None and (name.startswith("429") or pre_execution_5xx):
            response = _fault_response(name, ctx.request_id)
        elif name == "bad_json":
            body = b"<html><head><title>502 Bad Gateway</title></head><body>Bad gateway</body></html>\n"
            response = _Response(200, [("Content-Type", "text/html")], body)
        else:
            try:
                response = sim._handle(ctx, fault)
            except _ApiError as exc:
                response = _error_response(exc, ctx.request_id)
            except Exception:
                # A simulator bug: show it, but still answer like Stripe so the connection stays usable.
                traceback.print_exc()
                error = _ApiError(500, "An unknown error occurred in the simulator.", type="api_error")
                response = _error_response(error, ctx.request_id)
        if name == "lost_response":
            self.close_connection = True
            return None
        if name == "truncated_json" and response.stream is None:
            cut = min(len(response.body) - 1, max(1, int(len(response.body) * fault.fraction)))  # type: ignore[union-attr]
            response = _Response(response.status, response.headers, response.body[: max(0, cut)])
        limit = None
        if name == "cut_download":
            limit = int(response.content_length * fault.fraction)  # type: ignore[union-attr]
            self.close_connection = True
        self._send(ctx, response, limit)
        return response.status

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean end of stream.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _send(self, ctx: _Context, response: _Response, limit: int | None) -> None:
        length = response.content_length
        lines = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}"]
        headers = [
            ("Server", "stripe-simulator"),
            ("Date", formatdate(usegmt=True)),
            *response.headers,
            ("Content-Length", str(length)),
            ("Request-Id", ctx.request_id),
            ("Stripe-Version", ctx.headers.get("Stripe-Version") or API_VERSION),
            ("Cache-Control", "no-cache, no-store"),
            ("Connection", "close" if self.close_connection else "keep-alive"),
        ]
        lines.extend(f"{k}: {v}" for k, v in headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if response.stream is None:
                body = response.body if limit is None else response.body[:limit]
                self.wfile.write(head + body)  # one write: header and body in a single segment
            else:
                self.wfile.write(head)
                remaining = length if limit is None else limit
                for piece in response.stream():
                    if remaining <= 0:
                        break
                    view = memoryview(piece)
                    if len(view) > remaining:
                        view = view[:remaining]
                    self.wfile.write(view)
                    remaining -= len(view)
        except OSError:
            self.close_connection = True
