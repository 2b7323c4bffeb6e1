"""Stripe's values on the wire: form encoding, ids, timestamps, report run statuses."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

__all__ = [
    "CREATED_FILTER_KEYS",
    "LIST_LIMIT_RANGE",
    "TERMINAL_STATUSES",
    "ReportRunStatus",
    "canonical_json",
    "check_created",
    "check_id",
    "check_list_limit",
    "encode_form",
    "result_file",
    "to_unix_seconds",
]

LIST_LIMIT_RANGE = (1, 100)
CREATED_FILTER_KEYS = ("gt", "gte", "lt", "lte")


class ReportRunStatus(str, Enum):
    """The statuses Stripe documents for ``reporting.report_run``.

    Stripe sends ``status`` as a plain string, so an unknown value is possible; it counts as
    "not finished yet", never as success.
    """

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @classmethod
    def is_terminal(cls, status: str | None) -> bool:
        return status in TERMINAL_STATUSES

    @classmethod
    def is_known(cls, status: str | None) -> bool:
        return status in {s.value for s in cls}


TERMINAL_STATUSES = frozenset({ReportRunStatus.SUCCEEDED.value, ReportRunStatus.FAILED.value})


def to_unix_seconds(value: Any, name: str) -> int:
    """Convert an interval bound to UTC Unix seconds.

    Accepts an ``int`` (Unix seconds), a string of digits, an aware ``datetime`` or an ISO 8601
    string with an offset. Naive datetimes are refused: for a finance report, guessing the zone
    silently shifts the interval by hours.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a timestamp, got the boolean {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be a whole number of Unix seconds, got {value!r}.")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{name} must be Unix seconds, an aware datetime or an ISO 8601 date-time, got {value!r}."
            ) from None
        return to_unix_seconds(parsed, name)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{name} is a naive datetime ({value.isoformat()}); pass a timezone-aware datetime "
                "(for example pendulum.datetime(2024, 1, 1, tz='UTC')), an ISO 8601 string with an offset, "
                "or Unix seconds."
            )
        seconds = value.timestamp()
        if not seconds.is_integer():
            raise ValueError(f"{name} ({value.isoformat()}) must fall on a whole second.")
        return int(seconds)
    raise ValueError(
        f"{name} must be Unix seconds, an aware datetime or an ISO 8601 date-time, "
        f"got {type(value).__name__} {value!r}."
    )


def encode_form(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Form-encode nested data the way Stripe's API expects.

    ``{"parameters": {"interval_start": 1, "columns": ["a", "b"]}}`` becomes
    ``parameters[interval_start]=1``, ``parameters[columns][0]=a``, ``parameters[columns][1]=b``.
    ``None`` values are left out.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        pairs.extend(_encode_value(name, value))
    return pairs


def _encode_value(name: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return encode_form(value, name)
    if isinstance(value, (list, tuple)):
        pairs: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            pairs.extend(_encode_value(f"{name}[{index}]", item))
        return pairs
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    return [(name, str(value))]


def check_id(value: Any, name: str, prefix: str | None = None) -> str:
    """A Stripe id safe to put in a URL path (no ``/``, ``?``, ``#`` or spaces), stripped.

    :param value: what the caller passed.
    :param name: the argument's name, for the message.
    :param prefix: the id's required prefix (``frr_``), if any.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    text: str = value.strip()
    if "/" in text or "?" in text or "#" in text or any(c.isspace() for c in text):
        raise ValueError(f"{name} {text!r} is not a Stripe id.")
    if prefix and not text.startswith(prefix):
        raise ValueError(f"{name} {text!r} is not a Stripe report run id (they start with {prefix!r}).")
    return text


def check_created(created: Any) -> int | dict[str, int]:
    """A list's ``created`` filter: Unix seconds, or a mapping of ``gt``/``gte``/``lt``/``lte``."""
    if isinstance(created, Mapping):
        unknown = sorted(set(created) - set(CREATED_FILTER_KEYS))
        if unknown or not created:
            raise ValueError(
                f"created filter keys must be among {', '.join(CREATED_FILTER_KEYS)}, got {sorted(created)!r}."
            )
        return {op: to_unix_seconds(value, f"created[{op}]") for op, value in created.items()}
    return to_unix_seconds(created, "created")


def check_list_limit(limit: Any) -> int:
    """A list's page size, within what Stripe accepts."""
    low, high = LIST_LIMIT_RANGE
    if isinstance(limit, bool) or not isinstance(limit, int) or not low <= limit <= high:
        raise ValueError(f"limit must be a whole number from {low} to {high}, got {limit!r}.")
    return limit


def result_file(report_run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``file`` object of a succeeded run, or ``None``."""
    result = report_run.get("result")
    return result if isinstance(result, dict) else None


def canonical_json(data: Any) -> str:
    """A stable text for hashing parameters (sorted keys, no spaces)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
