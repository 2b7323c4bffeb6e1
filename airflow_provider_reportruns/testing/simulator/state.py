"""The simulator's state and the rules that read it: runs, idempotency keys, faults, files.

Everything a request handler shares lives on one :class:`SimulatorState` behind one lock. The
public :class:`~airflow_provider_reportruns.testing.simulator.StripeSimulator` owns one and adds
the lifecycle and the test controls; the HTTP server and the endpoint rules only see this object.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any

from airflow_provider_reportruns.testing.simulator.catalogue import (
    REPORT_TYPES,
    ReportTypeSpec,
)
from airflow_provider_reportruns.testing.simulator.content import (
    FILLER_PARAMETERS,
    Filler,
    RowMaker,
    b62,
    natural_content,
)
from airflow_provider_reportruns.testing.simulator.errors import ApiError, Response
from airflow_provider_reportruns.testing.simulator.faults import Fault

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_FAILURE_MESSAGE",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "REQUIRED_PERMISSION",
    "Context",
    "IdempotencyEntry",
    "Run",
    "RunDelay",
    "SimulatorRequest",
    "SimulatorState",
]

DEFAULT_API_KEY = "sk_test_simulator"
DEFAULT_FAILURE_MESSAGE = (
    "An unexpected error occurred while running this report. Please try again, "
    "and contact Stripe support (https://support.stripe.com/) if the problem persists."
)
REQUIRED_PERMISSION = "report_runs_and_report_types_read"
MAX_IDEMPOTENCY_KEY_LENGTH = 255

#: ``run_delay`` may be a number of seconds or ``(report_type, parameters, sequence_no) -> seconds``.
RunDelay = float | Callable[[str, Mapping[str, Any], int], float]


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


@dataclass
class Run:
    """A report run as stored: what was asked, when, and any status forced by a test."""

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
    maker: RowMaker | None = None


@dataclass
class IdempotencyEntry:
    """What Stripe keeps under an ``Idempotency-Key``: the request's fingerprint, then its answer."""

    fingerprint: str
    done: bool = False
    response: Response | None = None
    request_id: str = ""
    run_id: str | None = None


@dataclass
class Context:
    """One request on its way through the rules, with what they learn about it."""

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


class SimulatorState:
    """Settings and mutable state of one simulator; see ``StripeSimulator`` for the settings."""

    def __init__(
        self,
        *,
        api_key: str,
        run_delay: RunDelay,
        fail_report_types: Iterable[str],
        failure_message: str,
        live_only_report_types: Iterable[str],
        restricted_keys: Mapping[str, bool] | None,
        result_size: int | None,
        file_ttl: float | None,
        data_available_start: int,
        data_available_end: int | None,
        seed: int,
        faults: Sequence[Fault],
        clock: Callable[[], float],
    ) -> None:
        if result_size is not None and result_size < 0:
            raise ValueError("result_size must be >= 0 or None")
        self.api_key = api_key
        self.run_delay = run_delay
        self.fail_report_types = frozenset(fail_report_types)
        self.failure_message = failure_message
        self.live_only_report_types = frozenset(live_only_report_types)
        self.restricted_keys = dict(restricted_keys or {})
        self.result_size = result_size
        self.file_ttl = file_ttl
        self.data_available_start = int(data_available_start)
        self.seed = seed
        self.base_url = ""  # set once the server listens: result file URLs are built from it
        self.clock = clock
        self.account_id = "acct_1" + b62(hashlib.blake2b(f"{seed}:account".encode()).digest(), 15)

        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.faults: list[Fault] = list(faults)
        self.fault_fired: list[int] = [0] * len(self.faults)
        self.fault_counts: dict[str, int] = {}
        self.data_end_all: int | None = None if data_available_end is None else int(data_available_end)
        self.data_end: dict[str, int] = {}
        self.runs: dict[str, Run] = {}
        self.files: dict[str, str] = {}
        self.idempotency: dict[tuple[bool, str | None, str], IdempotencyEntry] = {}
        self.log: list[SimulatorRequest] = []
        self.arrivals = 0
        self.cleared = 0  # records dropped by clear_requests(), so requests() can still settle
        self.run_seq = 0
        self.request_no = 0
        self.fillers: dict[tuple[Any, ...], Filler] = {}
        self.stopping = threading.Event()

    def get_run(self, run_id: str) -> Run:
        """A run by id; ``KeyError`` when unknown."""
        with self.lock:
            return self.runs[run_id]

    def data_end_for(self, report_type: str) -> int:
        """The end of available data for a report type; call with the lock held."""
        if report_type in self.data_end:
            return self.data_end[report_type]
        if self.data_end_all is not None:
            return self.data_end_all
        return int(self.clock()) // 86400 * 86400

    def next_request_id(self) -> str:
        """A fresh ``req_`` id, derived from the seed so a run replays exactly."""
        with self.lock:
            self.request_no += 1
            n = self.request_no
        return "req_" + b62(hashlib.blake2b(f"{self.seed}:req:{n}".encode(), digest_size=12).digest(), 14)

    def pick_fault(self, kind: str) -> Fault | None:
        """The first fault that fires for a request of ``kind``, if any."""
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.kind not in ("any", kind):
                    continue
                if fault.times is not None and self.fault_fired[index] >= fault.times:
                    continue
                # Draw for every candidate, so the sequence depends only on the request order.
                if self.rng.random() < fault.rate:
                    self.fault_fired[index] += 1
                    self.fault_counts[fault.fault] = self.fault_counts.get(fault.fault, 0) + 1
                    return fault
        return None

    def record(self, entry: SimulatorRequest) -> None:
        """Append a finished request to the log."""
        with self.lock:
            self.log.append(entry)

    def arrival(self) -> int:
        """Number an arriving request."""
        with self.lock:
            n = self.arrivals
            self.arrivals += 1
            return n

    def run_state(self, run: Run, now: float, creating: bool = False) -> tuple[str, float | None, str | None]:
        """A run's ``(status, succeeded_at, error)`` at ``now``."""
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

    def render_run(self, run: Run, now: float, creating: bool = False) -> dict[str, Any]:
        """A run as Stripe's ``reporting.report_run`` object at ``now``."""
        status, succeeded, error = self.run_state(run, now, creating)
        result = self.render_file(run, succeeded) if succeeded is not None else None
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

    def render_file(self, run: Run, succeeded: float) -> dict[str, Any]:
        """A succeeded run's result as Stripe's ``file`` object."""
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
            "size": self.content_length(run),
            "title": f"FinanceReportRun {run.id}",
            "type": "csv",
            "url": f"{self.base_url}/v1/files/{run.file_id}/contents",
        }

    def natural(self, run: Run) -> tuple[bytes, RowMaker]:
        """A run's own CSV bytes and row maker, built on first use."""
        # Generated outside the lock; two threads racing compute the same bytes.
        if run.content is None or run.maker is None:
            run.content, run.maker = natural_content(REPORT_TYPES[run.report_type], run.parameters)
        return run.content, run.maker

    def content_length(self, run: Run) -> int:
        """The size of a run's result file in bytes."""
        if self.result_size is not None:
            return self.result_size
        return len(self.natural(run)[0])

    def content_pieces(self, run: Run) -> Iterator[bytes | memoryview]:
        """A run's result file as pieces: its rows, then filler up to ``result_size``."""
        natural, maker = self.natural(run)
        if self.result_size is None:
            yield natural
            return
        if len(natural) >= self.result_size:
            yield natural[: self.result_size]
            return
        yield natural
        # Filler depends only on what shapes a row, so one block serves many runs (and a run's
        # bytes never depend on which run built the cached block first).
        shaping = {k: v for k, v in maker.parameters.items() if k in FILLER_PARAMETERS}
        key = (run.report_type, maker.columns, json.dumps(shaping, sort_keys=True))
        with self.lock:
            filler = self.fillers.get(key)
        if filler is None:
            filler = Filler(RowMaker(run.report_type, shaping, maker.columns))
            with self.lock:
                if len(self.fillers) >= 8:
                    self.fillers.pop(next(iter(self.fillers)))
                self.fillers[key] = filler
        yield from filler.pieces(self.result_size - len(natural))

    def check_live_only(self, ctx: Context, report_type: str) -> None:
        """Refuse a live-mode-only report type to a test-mode key.

        :raises ApiError: 400 naming ``report_type``.
        """
        if report_type in self.live_only_report_types and not ctx.livemode:
            raise ApiError(
                400,
                f"The report type {report_type} is only available with live-mode data; a live-mode API "
                "key is required (see https://stripe.com/docs/keys#test-live-modes).",
                param="report_type",
            )

    def visible(self, ctx: Context, run: Run) -> bool:
        """Whether the request's account and mode may see ``run``."""
        return run.account == ctx.account and run.livemode == ctx.livemode

    def render_type(self, spec: ReportTypeSpec, livemode: bool) -> dict[str, Any]:
        """A report type as Stripe's ``reporting.report_type`` object."""
        with self.lock:
            end = self.data_end_for(spec.id)
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
