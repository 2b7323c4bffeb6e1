"""Stripe's bad days, one fault at a time: what is retried, what is not, and that a retried create
never makes a second report run.

Everything goes over real HTTP to the local simulator (``Fault`` scripts the failure); ``requests``
is patched only for what a server cannot provoke (a TLS verification failure).
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_reportruns.client import RATE_LIMIT_PENALTY, RateLimiter, StripeReportingClient
from airflow_provider_reportruns.hooks.stripe import StripeReportingError, StripeReportingHook
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator

REPORT_TYPE = "balance.summary.1"
# 2024-01-01 .. 2024-01-02 UTC: well inside the simulator's data availability.
INTERVAL = {"interval_start": 1704067200, "interval_end": 1704153600}


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(seed=5) as simulator:
        yield simulator


@pytest.fixture
def hook_for(airflow_conn) -> Callable[..., StripeReportingHook]:
    """``hook_for(sim, **hook_kwargs)``: a hook on a connection to ``sim`` with a 10 ms first backoff."""
    count = iter(range(1000))

    def make(simulator: StripeSimulator, extra: dict[str, Any] | None = None, **kwargs: Any) -> StripeReportingHook:
        conn_id = f"stripe_faults_{next(count)}"
        # No client-side rate limit to speak of: these tests time retries, not the limiter.
        extra = {"max_requests_per_second": 1000, **(extra or {})}
        airflow_conn(conn_id, conn_type="stripe", host=simulator.url, password=simulator.api_key, extra=extra)
        kwargs.setdefault("initial_backoff", 0.01)
        return StripeReportingHook(conn_id, **kwargs)

    return make


def _requests(sim: StripeSimulator, kind: str, hook: StripeReportingHook) -> list[Any]:
    """The simulator's log of one request kind, once it holds every request ``hook`` sent.

    A request is logged just after its answer went out, so the client can be ahead of the log.
    """
    deadline = time.monotonic() + 5
    while len(sim.requests()) < hook.client.request_count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [r for r in sim.requests() if r.kind == kind]


def _succeeded_run(sim: StripeSimulator, hook: StripeReportingHook) -> dict[str, Any]:
    run = hook.create_report_run(REPORT_TYPE, INTERVAL, idempotency_key="faults-download")
    sim.finish_report_run(run["id"])
    return hook.get_report_run(run["id"])


# -- creates: retried with one Idempotency-Key, never a second run ----------------------------


def test_500_then_200_makes_one_run_with_the_same_idempotency_key(sim, hook_for) -> None:
    sim.add_fault(Fault("create", "500", times=1))
    hook = hook_for(sim)

    run = hook.create_report_run(REPORT_TYPE, INTERVAL)

    creates = _requests(sim, "create", hook)
    assert [r.status for r in creates] == [500, 200]
    keys = {r.headers["Idempotency-Key"] for r in creates}
    assert len(keys) == 1 and keys != {""}
    assert [r["id"] for r in sim.report_runs()] == [run["id"]]
    assert hook.client.retry_count == 1


# cut_download on a create: the answer's body breaks off before its Content-Length is reached.
@pytest.mark.parametrize(
    "fault", ["reset", "lost_response", "truncated_json", "cut_download", "bad_json", "502", "503"]
)
def test_create_survives_the_fault_with_one_run_and_one_key(sim, hook_for, fault) -> None:
    sim.add_fault(Fault("create", fault, times=1))
    hook = hook_for(sim)

    run = hook.create_report_run(REPORT_TYPE, INTERVAL, idempotency_key=f"faults-{fault}")

    creates = _requests(sim, "create", hook)
    assert len(creates) == 2, [(r.status, r.fault) for r in creates]
    assert creates[0].fault == fault
    assert {r.headers["Idempotency-Key"] for r in creates} == {f"faults-{fault}"}
    assert [r["id"] for r in sim.report_runs()] == [run["id"]]
    if fault in ("lost_response", "truncated_json", "cut_download"):
        # Stripe executed the first request and stored its answer: the retry is a replay.
        assert creates[1].replayed and creates[1].run_id == run["id"]


def test_read_timeout_on_a_create_is_retried_with_the_same_key_and_makes_one_run(sim, hook_for) -> None:
    # The server holds the create (and its idempotency key) for 0.6 s; the client gives up after
    # 0.3 s. Retries meanwhile meet 409 idempotency_key_in_use, then the stored answer.
    sim.add_fault(Fault("create", "slow", times=1, delay=0.6))
    hook = hook_for(sim, timeout=0.3, max_retries=6, initial_backoff=0.05)

    run = hook.create_report_run(REPORT_TYPE, INTERVAL, idempotency_key="faults-slow-create")

    creates = _requests(sim, "create", hook)
    assert len(creates) == hook.client.request_count >= 2
    assert {r.headers["Idempotency-Key"] for r in creates} == {"faults-slow-create"}
    assert creates[-1].status == 200 and creates[-1].replayed
    assert set(r.status for r in creates) <= {200, 409}
    assert [r["id"] for r in sim.report_runs()] == [run["id"]]
    assert hook.client.retry_count >= 1


def test_stored_500_is_replayed_to_every_retry_and_creates_nothing(sim, hook_for) -> None:
    # Stripe stores a 500 that happened after the endpoint started, and replays it for the key.
    sim.add_fault(Fault("create", "500", times=1, stored=True))
    hook = hook_for(sim, max_retries=2)

    with pytest.raises(StripeReportingError) as caught:
        hook.create_report_run(REPORT_TYPE, INTERVAL, idempotency_key="faults-stored-500")

    assert "gave up after 3 attempts" in str(caught.value)
    assert caught.value.transient
    assert [r.replayed for r in _requests(sim, "create", hook)] == [False, True, True]
    assert sim.report_runs() == []


# -- what is not retried ----------------------------------------------------------------------


def test_400_is_not_retried(sim, hook_for) -> None:
    hook = hook_for(sim)

    with pytest.raises(StripeReportingError) as caught:
        hook.create_report_run("balance.summary.9", INTERVAL)

    assert caught.value.http_status == 400 and not caught.value.transient
    assert len(_requests(sim, "create", hook)) == 1
    assert hook.client.retry_count == 0


@pytest.mark.parametrize("fault", ["500_should_retry_false", "429_should_retry_false"])
def test_stripe_should_retry_false_is_not_retried(sim, hook_for, fault) -> None:
    sim.add_fault(Fault("retrieve", fault, times=1))
    hook = hook_for(sim)
    run = hook.create_report_run(REPORT_TYPE, INTERVAL)

    with pytest.raises(StripeReportingError) as caught:
        hook.get_report_run(run["id"])

    assert caught.value.http_status == int(fault[:3])
    assert "attempts" not in str(caught.value)
    assert len(_requests(sim, "retrieve", hook)) == 1
    assert hook.client.retry_count == 0


class _ScriptedStripe(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted ``(status, headers, body)``.

    For answers the simulator has no fault for (a 400 that says ``Stripe-Should-Retry: true``).
    """

    daemon_threads = True

    def __init__(self, script: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        self.script = list(script)
        self.seen: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append(self.path)
                status, headers, body = server.script.pop(0)
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_stripe_should_retry_true_forces_a_retry_of_a_400() -> None:
    error = {"error": {"type": "invalid_request_error", "message": "try again"}}
    server = _ScriptedStripe(
        [
            (400, {"Stripe-Should-Retry": "true"}, error),
            (200, {}, {"id": "balance.summary.1", "object": "reporting.report_type"}),
        ]
    )
    try:
        client = StripeReportingClient("sk_test_scripted", api_base=server.url, initial_backoff=0.01)
        assert client.get_report_type(REPORT_TYPE)["id"] == REPORT_TYPE
    finally:
        server.shutdown()
        server.server_close()
    assert len(server.seen) == 2
    assert client.retry_count == 1


def test_tls_verification_failure_is_not_retried(sim, hook_for, monkeypatch) -> None:
    import requests

    calls: list[Any] = []

    def refuse(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        calls.append(kwargs.get("verify"))
        raise requests.exceptions.SSLError("certificate verify failed: self-signed certificate")

    monkeypatch.setattr(requests.Session, "request", refuse)
    hook = hook_for(sim)

    with pytest.raises(StripeReportingError, match="Could not verify the TLS certificate") as caught:
        hook.list_report_types()

    assert calls == [True], "exactly one attempt, with verification on"
    assert not caught.value.transient


# -- reads: 429, resets, timeouts, broken bodies ------------------------------------------------


def test_429_is_retried_after_the_shared_limiter_is_penalized(sim, hook_for, monkeypatch) -> None:
    penalties: list[RateLimiter] = []
    original = RateLimiter.penalize

    def spy(self: RateLimiter, seconds: float = RATE_LIMIT_PENALTY) -> None:
        penalties.append(self)
        original(self, seconds)

    monkeypatch.setattr(RateLimiter, "penalize", spy)
    sim.add_fault(Fault("report_types", "429", times=1))
    hook = hook_for(sim)
    other = StripeReportingHook(hook.stripe_conn_id)  # same key and host: same process-wide limiter

    hook.list_report_types()

    assert penalties == [hook.client.rate_limiter]
    assert other.client.rate_limiter is hook.client.rate_limiter
    first, second = _requests(sim, "report_types", hook)
    assert (first.status, second.status) == (429, 200)
    # The retry waited for the penalty, not just the 10 ms backoff.
    assert second.timestamp - first.timestamp >= RATE_LIMIT_PENALTY * 0.9


@pytest.mark.parametrize(
    "fault", ["reset", "bad_json", "truncated_json", "cut_download", "500", "502", "503", "429_should_retry_true"]
)
def test_retrieve_survives_the_fault(sim, hook_for, fault) -> None:
    hook = hook_for(sim)
    run = hook.create_report_run(REPORT_TYPE, INTERVAL)
    sim.add_fault(Fault("retrieve", fault, times=1))

    assert hook.get_report_run(run["id"])["id"] == run["id"]

    retrieves = _requests(sim, "retrieve", hook)
    assert [r.fault for r in retrieves] == [fault, None]
    assert hook.client.retry_count == 1


def test_read_timeout_on_a_retrieve_is_retried(sim, hook_for) -> None:
    hook = hook_for(sim, timeout=0.2)
    run = hook.create_report_run(REPORT_TYPE, INTERVAL)
    sim.add_fault(Fault("retrieve", "slow", times=1, delay=0.5))

    assert hook.get_report_run(run["id"])["id"] == run["id"]
    assert hook.client.retry_count == 1


def test_exhausted_retries_name_the_attempts(sim, hook_for) -> None:
    sim.add_fault(Fault("report_type", "503"))
    hook = hook_for(sim, max_retries=2)

    with pytest.raises(StripeReportingError) as caught:
        hook.get_report_type(REPORT_TYPE)

    message = str(caught.value)
    assert "gave up after 3 attempts" in message
    assert "503" in message and "(request req_" in message
    assert caught.value.transient
    assert len(_requests(sim, "report_type", hook)) == 3


# -- downloads ----------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


@pytest.mark.parametrize("fault", ["cut_download", "reset", "500", "slow"])
def test_download_is_restarted_byte_identical_without_a_part_file(tmp_path, hook_for, fault) -> None:
    with StripeSimulator(seed=6, result_size=3 * 1024 * 1024 + 17) as sim:
        hook = hook_for(sim, timeout=0.5)
        run = _succeeded_run(sim, hook)
        sim.add_fault(Fault("file_contents", fault, times=1, delay=1.0))
        destination = tmp_path / "out" / "report.csv"

        path = hook.download_report_run(run, destination)

        assert Path(path).read_bytes() == sim.result_content(run["id"])
        assert _leftovers(destination.parent) == []
        assert [r.fault for r in _requests(sim, "file_contents", hook)] == [fault, None]


def test_download_cut_every_time_fails_naming_the_attempts_and_leaves_nothing(tmp_path, hook_for) -> None:
    with StripeSimulator(seed=7, result_size=2 * 1024 * 1024) as sim:
        hook = hook_for(sim, max_retries=2)
        run = _succeeded_run(sim, hook)
        sim.add_fault(Fault("file_contents", "cut_download"))
        destination = tmp_path / "report.csv"

        with pytest.raises(StripeReportingError) as caught:
            hook.download_report_run(run, destination)

        message = str(caught.value)
        assert "broke off" in message or "incomplete" in message
        assert "gave up after 3 attempts" in message
        assert caught.value.partial_download
        assert len(_requests(sim, "file_contents", hook)) == 3
        assert os.listdir(tmp_path) == []


# -- waiting through a bad spell ----------------------------------------------------------------


def test_sensor_poke_waits_through_exhausted_transient_retries_and_fails_on_a_real_error(sim, hook_for) -> None:
    from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor

    hook = hook_for(sim, max_retries=1)
    run = hook.create_report_run(REPORT_TYPE, INTERVAL)
    sim.finish_report_run(run["id"])
    sensor = StripeReportRunSensor(task_id="wait", report_run_id=run["id"], stripe_conn_id=hook.stripe_conn_id)
    sensor.__dict__["hook"] = hook  # the connection's hook, with the short backoff
    sim.add_fault(Fault("retrieve", "reset", times=2))  # both attempts of the first poke

    assert sensor.poke({}) is False
    done = sensor.poke({})
    assert done.is_done and done.xcom_value["report_run_id"] == run["id"]

    sensor.report_run_id = "frr_doesNotExist"
    with pytest.raises(StripeReportingError, match="404"):
        sensor.poke({})


def test_trigger_polls_through_exhausted_transient_retries(sim, hook_for, caplog, capfd) -> None:
    import asyncio

    from airflow_provider_reportruns.triggers import report_run as triggers

    # The trigger builds its own client from the connection: one retry per poll.
    hook = hook_for(sim, extra={"max_retries": 1})
    run = hook.create_report_run(REPORT_TYPE, INTERVAL)
    sim.finish_report_run(run["id"])
    sim.add_fault(Fault("retrieve", "503", times=2))  # both attempts of the first poll
    trigger = triggers.StripeReportRunTrigger(run["id"], hook.stripe_conn_id, poll_interval=0.05)

    async def events() -> list[Any]:
        return [event.payload async for event in trigger.run()]

    payloads = asyncio.run(asyncio.wait_for(events(), 10))

    assert [(p["status"], p["report_run_id"]) for p in payloads] == [("succeeded", run["id"])]
    # Poll 1: 503 and its one retry 503 (gave up, logged, waited on); poll 2: 200.
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err  # stdlib logging on Airflow 2, structlog on 3
    assert "Stripe did not answer this poll; still waiting" in logged
    assert "gave up after 2 attempts" in logged
    retrieves = [r for r in sim.requests() if r.kind == "retrieve"]
    assert [r.status for r in retrieves] == [503, 503, 200]
