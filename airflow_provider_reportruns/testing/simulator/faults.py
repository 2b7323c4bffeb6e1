"""Scripted failures: which requests they hit and what they do."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAULT_NAMES", "REQUEST_KINDS", "Fault"]

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
