"""``StripeSimulator``: the object tests hold, with its lifecycle and its test controls.

It owns one :class:`~.state.SimulatorState` (shared with the HTTP server) and a server thread;
settings such as ``result_size`` live on the state, so changing them on a running simulator
takes effect on the next request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import EllipsisType
from typing import Any, Generic, TypeVar, overload

from airflow_provider_reportruns.testing.simulator.catalogue import (
    DEFAULT_DATA_AVAILABLE_START,
    DEFAULT_LIVE_ONLY_REPORT_TYPES,
    REPORT_TYPES,
)
from airflow_provider_reportruns.testing.simulator.faults import Fault
from airflow_provider_reportruns.testing.simulator.server import Handler, Server
from airflow_provider_reportruns.testing.simulator.state import (
    DEFAULT_API_KEY,
    DEFAULT_FAILURE_MESSAGE,
    RunDelay,
    SimulatorRequest,
    SimulatorState,
)

__all__ = ["StripeSimulator"]

_T = TypeVar("_T")


class _StateSetting(Generic[_T]):
    """A simulator setting stored on its state, so the server reads the current value."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _StateSetting[_T]: ...

    @overload
    def __get__(self, obj: StripeSimulator, owner: type) -> _T: ...

    def __get__(self, obj: StripeSimulator | None, owner: type) -> _T | _StateSetting[_T]:
        if obj is None:
            return self
        value: _T = getattr(obj.state, self.name)
        return value

    def __set__(self, obj: StripeSimulator, value: _T) -> None:
        setattr(obj.state, self.name, value)


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

    api_key = _StateSetting[str]()
    run_delay = _StateSetting[RunDelay]()
    fail_report_types = _StateSetting[frozenset[str]]()
    failure_message = _StateSetting[str]()
    live_only_report_types = _StateSetting[frozenset[str]]()
    restricted_keys = _StateSetting[dict[str, bool]]()
    result_size = _StateSetting["int | None"]()
    file_ttl = _StateSetting["float | None"]()
    data_available_start = _StateSetting[int]()
    seed = _StateSetting[int]()
    account_id = _StateSetting[str]()

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
        self.state = SimulatorState(
            api_key=api_key,
            run_delay=run_delay,
            fail_report_types=fail_report_types,
            failure_message=failure_message,
            live_only_report_types=live_only_report_types,
            restricted_keys=restricted_keys,
            result_size=result_size,
            file_ttl=file_ttl,
            data_available_start=data_available_start,
            data_available_end=data_available_end,
            seed=seed,
            faults=faults,
            clock=clock,
        )
        self.host = host
        self.port = port
        self._public_url = public_url.rstrip("/") if public_url else None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> StripeSimulator:
        """Bind and serve in a background thread.

        :returns: the simulator itself, started.
        """
        if self._server is not None:
            raise RuntimeError("StripeSimulator is already started")
        server = Server((self.host, self.port), Handler)
        server.state = self.state
        self.port = server.server_address[1]
        self.state.base_url = self.public_url
        self._server = server
        self.state.stopping.clear()
        self._thread = threading.Thread(target=server.serve_until_woken, name="stripe-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (idle keep-alive ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        self.state.stopping.set()
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

    def report_runs(self, account: str | EllipsisType | None = ...) -> list[dict[str, Any]]:
        """All report runs as Stripe would return them now, oldest first.

        :param account: only runs of this ``Stripe-Account`` (``None``: the platform's own);
            by default runs of every account.
        """
        now = self.state.clock()
        with self.state.lock:
            runs = [r for r in self.state.runs.values() if account is ... or r.account == account]
        return [self.state.render_run(r, now) for r in runs]

    def report_run(self, run_id: str) -> dict[str, Any]:
        """One report run as Stripe would return it now.

        :param run_id: the ``frr_`` id.
        :raises KeyError: unknown id.
        """
        return self.state.render_run(self.state.get_run(run_id), self.state.clock())

    def requests(self, settle: float = 0.5) -> list[SimulatorRequest]:
        """Finished requests in arrival order (requests still being answered are not listed).

        A request is recorded just after its response is written, so a client can hold the
        response before the log has it; wait up to ``settle`` seconds for every request that
        arrived to be recorded, so a test reading the log right after a call sees that call.
        """
        deadline = time.monotonic() + settle
        while True:
            with self.state.lock:
                if len(self.state.log) + self.state.cleared >= self.state.arrivals or time.monotonic() >= deadline:
                    return sorted(self.state.log, key=lambda r: r.seq)
            time.sleep(0.002)

    def clear_requests(self) -> None:
        """Forget the request log (for long benchmarks)."""
        self.requests()  # let requests already answered be recorded, so they are cleared too
        with self.state.lock:
            self.state.cleared += len(self.state.log)
            self.state.log.clear()

    def set_data_available_end(self, end: int, report_type: str | None = None) -> None:
        """Move the end of available data, as Stripe's twice-daily refresh does.

        :param end: unix seconds.
        :param report_type: one report type, or ``None`` for every type (which also drops earlier
            per-type settings).
        """
        with self.state.lock:
            if report_type is None:
                self.state.data_end_all = int(end)
                self.state.data_end.clear()
            else:
                if report_type not in REPORT_TYPES:
                    raise KeyError(report_type)
                self.state.data_end[report_type] = int(end)

    def data_available_end(self, report_type: str) -> int:
        """The current end of available data for a report type (unix seconds).

        :param report_type: a report type id.
        """
        with self.state.lock:
            return self.state.data_end_for(report_type)

    def finish_report_run(self, run_id: str, status: str = "succeeded", error: str | None = None) -> None:
        """Force a report run into a state now, whatever its delay.

        :param run_id: the ``frr_`` id.
        :param status: ``succeeded``, ``failed``, ``pending`` (stays pending) or any other string,
            which Stripe-side code should treat as "not finished".
        :param error: the ``error`` text; a failed run without one gets ``failure_message``.
        :raises KeyError: unknown id.
        """
        with self.state.lock:
            run = self.state.runs[run_id]
            if status == "failed" and error is None:
                error = self.failure_message
            # Readers do not take the lock: publish the status last, after the fields it implies.
            run.forced_at = self.state.clock()
            run.forced_error = error
            run.forced_status = status

    def succeeded_at(self, run_id: str) -> float:
        """When the server considers the run finished (float unix time), even if still in the future.

        For a run that ends ``failed`` this is when it failed; for a run forced into a
        non-terminal status, ``math.inf``.

        :param run_id: the ``frr_`` id.
        :raises KeyError: unknown id.
        """
        run = self.state.get_run(run_id)
        if run.forced_status is not None:
            return run.forced_at if run.forced_status in ("succeeded", "failed") else math.inf
        return run.created + run.delay

    def result_content(self, run_id: str) -> bytes:
        """The exact bytes the result file URL of a run serves (whole file in memory).

        :param run_id: the ``frr_`` id; the content exists whatever the run's status.
        :raises KeyError: unknown id.
        """
        return b"".join(bytes(p) for p in self.state.content_pieces(self.state.get_run(run_id)))

    def iter_result_content(self, run_id: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The result file bytes in chunks of at most ``chunk`` bytes, without holding the file.

        :param run_id: the ``frr_`` id.
        :param chunk: maximum chunk size.
        """
        for piece in self.state.content_pieces(self.state.get_run(run_id)):
            view = memoryview(piece)
            for i in range(0, len(view), chunk):
                yield bytes(view[i : i + chunk])

    def result_size_of(self, run_id: str) -> int:
        """Size in bytes of a run's result file.

        :param run_id: the ``frr_`` id.
        """
        return self.state.content_length(self.state.get_run(run_id))

    def add_fault(self, fault: Fault) -> None:
        """Append a fault (checked after the existing ones).

        :param fault: the fault.
        """
        with self.state.lock:
            self.state.faults.append(fault)
            self.state.fault_fired.append(0)

    def clear_faults(self) -> None:
        """Remove every fault; :attr:`fault_counts` keeps its history."""
        with self.state.lock:
            self.state.faults.clear()
            self.state.fault_fired.clear()

    @property
    def fault_counts(self) -> dict[str, int]:
        """How many times each fault name fired so far (a copy)."""
        with self.state.lock:
            return dict(self.state.fault_counts)
