"""The secret key never leaks: not into task logs, XComs, rendered fields, trigger kwargs or events,
not to a foreign host, not over plain http, and TLS verification cannot be switched off.

Both balance example DAGs run three ways against the simulator (success, a failed report run, a
rejected key): the one-task one (deferrable, waiting for Stripe's data and for the run in inline
triggers) and the step-by-step one; the deferrable mapped example runs once. All with a
recognisable canary key; everything Airflow kept of those runs (logs, XComs, rendered fields, the
metadata DB files, where trigger kwargs and events are kept too) is searched for it.
The harness captures logs unmasked, so this is stricter than production, where Airflow's secret
masker would also hide a registered password.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _sim import data_arrives_once_asked
from airflow_harness import DagRunResult, run_dag

from airflow_provider_reportruns.hooks.stripe import StripeReportingError, StripeReportingHook
from airflow_provider_reportruns.testing.simulator import StripeSimulator

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example_dags" / "example_stripe_balance_report.py"
STEPS_EXAMPLE = REPO / "example_dags" / "example_stripe_balance_report_steps.py"
DEFERRABLE_EXAMPLE = REPO / "example_dags" / "example_stripe_reports_deferrable.py"
CANARY = "sk_test_SECRETcanary7Q2wE9rT4yU1iO8pA5sD3fG6"
# What a leak would contain even if cut or partly masked: the middle of the key.
CANARY_CORE = "SECRETcanary7Q2wE9rT4y"
LEAKED = "sk_test_LEAKEDonPurpose5Hj8Kl2Zx"
LEAKED_CORE = "LEAKEDonPurpose5Hj8"
DAY = dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc)  # the run covers 2024-03-01
MAR_1 = int((DAY - dt.timedelta(days=1)).timestamp())
SHORT_RETRY = ('"retry_delay": timedelta(minutes=5)', '"retry_delay": timedelta(seconds=0)')


def _leaks(text: str, core: str = CANARY_CORE) -> int:
    return text.count(core)


def _everything_kept(result: DagRunResult) -> dict[str, str]:
    """Every text Airflow kept of a DAG run, by where it came from."""
    kept = {"log_text": result.log_text}
    for attempt in result.tries:
        kept[f"log {attempt.task_id}[{attempt.map_index}] try {attempt.try_number}"] = attempt.log
    for key, value in result.xcoms.items():
        kept[f"xcom {key}"] = json.dumps(value, default=str)
    for key, fields in result.rendered_fields.items():
        kept[f"rendered {key}"] = json.dumps(fields, default=str)
    return kept


def _leaks_in_db(core: str = CANARY_CORE) -> list[str]:
    """Metadata DB files holding the key: what every component reads back (XComs, rendered
    fields, trigger rows, the log table), including SQLite's journal files."""
    home = Path(os.environ["AIRFLOW_HOME"])
    files = sorted(home.glob("airflow.db*"))
    assert files, f"no metadata DB under {home}"
    return [f.name for f in files if core.encode() in f.read_bytes()]


def _assert_no_leak(result: DagRunResult) -> None:
    kept = _everything_kept(result)
    leaks = {where: _leaks(text) for where, text in kept.items() if _leaks(text)}
    assert leaks == {}, f"the key appears in: {leaks}"
    assert _leaks_in_db() == []


def test_the_leak_search_finds_a_key_that_was_logged_and_pushed(write_dag) -> None:
    # The search must not be blind: a task that does leak a key is caught everywhere. (Another
    # key than the canary: what this test puts in the session's DB stays there.)
    dag_file = write_dag(
        "leaky.py",
        f"""
        import datetime as dt
        import logging
        try:
            from airflow.providers.standard.operators.python import PythonOperator
            from airflow.sdk import DAG
        except ImportError:
            from airflow import DAG
            from airflow.operators.python import PythonOperator

        def leak():
            logging.getLogger(__name__).info("the key is %s", {LEAKED!r})
            return {LEAKED!r}

        with DAG("leaky", start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), schedule=None):
            PythonOperator(task_id="leak", python_callable=leak)
        """,
    )

    result = run_dag(dag_file, "leaky", logical_date=DAY)

    leaks = {where for where, text in _everything_kept(result).items() if _leaks(text, LEAKED_CORE)}
    assert {"log_text", "log leak[-1] try 1", "xcom ('leak', -1, 'return_value')"} <= leaks
    assert _leaks_in_db(LEAKED_CORE) != []


def _with_short_retry(example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of an example DAG with its 5-minute retry delay made 0 so failing runs end in seconds
    (``dag.test()`` waits out a retry delay); nothing else changed."""
    monkeypatch.setenv("STRIPE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("STRIPE_EXAMPLE_POKE_SECONDS", "1")
    source = example.read_text()
    assert SHORT_RETRY[0] in source, f"{example.name}'s retry_delay changed: update SHORT_RETRY"
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    copy = dags / example.name
    copy.write_text(source.replace(*SHORT_RETRY))
    return copy


@pytest.fixture
def example_dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The one-task balance example (``example_stripe_balance_report``), retrying at once."""
    return _with_short_retry(EXAMPLE, tmp_path, monkeypatch)


@pytest.fixture
def steps_dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The step-by-step balance example (``example_stripe_balance_report_steps``), retrying at once."""
    return _with_short_retry(STEPS_EXAMPLE, tmp_path, monkeypatch)


@contextlib.contextmanager
def _finish_runs_once_polled(sim: StripeSimulator, polls: int) -> Iterator[None]:
    """Finish each pending run after it was read ``polls`` times: a deferrable sensor's own poke
    plus its trigger's first poll, so the wait really goes through the trigger."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            reads = collections.Counter(r.run_id for r in sim.requests() if r.kind == "retrieve")
            for run in sim.report_runs():
                if run["status"] == "pending" and reads[run["id"]] >= polls:
                    sim.finish_report_run(run["id"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


@pytest.fixture
def canary_conn(airflow_conn) -> Iterator[Any]:
    """``canary_conn(sim)``: ``stripe_default`` pointing at ``sim`` with the canary key."""

    def define(sim: StripeSimulator) -> None:
        airflow_conn("stripe_default", conn_type="stripe", host=sim.url, password=CANARY)

    yield define


def test_one_task_example_keeps_no_key_through_both_waits(example_dag: Path, canary_conn) -> None:
    # Stripe refuses the interval first: the task waits for the data in one trigger, creates the
    # run, and waits for the run (1.5 s) in another, all inline in dag.test().
    with (
        StripeSimulator(api_key=CANARY, seed=31, data_available_end=MAR_1, run_delay=1.5) as sim,
        data_arrives_once_asked(sim, int(DAY.timestamp())),
    ):
        canary_conn(sim)
        result = run_dag(example_dag, "example_stripe_balance_report", logical_date=DAY)
        requests = sim.requests()

    assert result.state == "success", result.log_text[-3000:]
    assert Path(result.xcom("store_report")).is_file()
    assert result.stored_run_id("store_report").startswith("frr_")
    log = "".join(result.logs("store_report"))
    assert "is only available through" in log
    assert log.count("[DAG TEST] running trigger in line") >= 2  # the data wait and the run wait
    assert {"report_type", "create", "retrieve", "file_contents"} <= {r.kind for r in requests}
    assert all(r.authorization_present for r in requests)  # the key was used on every call ...
    _assert_no_leak(result)  # ... and kept nowhere


def test_one_task_example_failed_report_run_keeps_no_key(example_dag: Path, canary_conn) -> None:
    with StripeSimulator(api_key=CANARY, seed=32, fail_report_types=["balance.summary.1"]) as sim:
        canary_conn(sim)
        result = run_dag(example_dag, "example_stripe_balance_report", logical_date=DAY)
        runs = sim.report_runs()

    assert result.task_state("store_report") == "failed"
    assert result.task_state("summarize_report") == "upstream_failed"
    # Unlike the run sensor, the task retries: each try creates a new run (a failed one is never
    # reused), which Stripe may well finish.
    assert len(result.logs("store_report")) == len(runs) == 3
    assert {run["status"] for run in runs} == {"failed"}
    assert "(balance.summary.1) failed: An unexpected error occurred" in result.log("store_report")
    _assert_no_leak(result)


def test_one_task_example_rejected_key_keeps_no_key(example_dag: Path, canary_conn) -> None:
    with StripeSimulator(api_key="sk_test_theOneStripeKnows", seed=33) as sim:
        canary_conn(sim)
        result = run_dag(example_dag, "example_stripe_balance_report", logical_date=DAY)

    assert result.task_state("store_report") == "failed"
    log = result.log("store_report")
    assert "The Stripe key in connection 'stripe_default' was rejected" in log
    assert "Invalid API Key provided: sk_test_" in log  # Stripe's masked echo, kept masked
    _assert_no_leak(result)


def test_steps_example_successful_run_keeps_no_key(steps_dag: Path, canary_conn) -> None:
    with StripeSimulator(api_key=CANARY, seed=21) as sim:
        canary_conn(sim)
        result = run_dag(steps_dag, "example_stripe_balance_report_steps", logical_date=DAY)
        requests = sim.requests()

    assert result.state == "success", result.log_text[-3000:]
    assert Path(result.xcom("download_report")).is_file()
    assert result.xcom("wait_for_report_run")["url"].startswith("http://127.0.0.1:")
    assert all(r.authorization_present for r in requests)  # the key was used on every call ...
    _assert_no_leak(result)  # ... and kept nowhere


def test_steps_example_failed_report_run_keeps_no_key(steps_dag: Path, canary_conn) -> None:
    with StripeSimulator(api_key=CANARY, seed=22, fail_report_types=["balance.summary.1"]) as sim:
        canary_conn(sim)
        result = run_dag(steps_dag, "example_stripe_balance_report_steps", logical_date=DAY)

    assert result.task_state("wait_for_report_run") == "failed"
    # A failed run fails the sensor at once: retries could not change Stripe's answer.
    assert len(result.logs("wait_for_report_run")) == 1
    assert "(balance.summary.1) failed: An unexpected error occurred" in result.log("wait_for_report_run")
    _assert_no_leak(result)


def test_steps_example_rejected_key_keeps_no_key(steps_dag: Path, canary_conn) -> None:
    with StripeSimulator(api_key="sk_test_theOneStripeKnows", seed=23) as sim:
        canary_conn(sim)
        result = run_dag(steps_dag, "example_stripe_balance_report_steps", logical_date=DAY)

    assert result.task_state("wait_for_data") == "failed"
    log = result.log("wait_for_data")
    assert "The Stripe key in connection 'stripe_default' was rejected" in log
    assert "Invalid API Key provided: sk_test_" in log  # Stripe's masked echo, kept masked
    _assert_no_leak(result)


def test_deferrable_example_keeps_no_key(canary_conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("STRIPE_EXAMPLE_POKE_SECONDS", "1")
    with StripeSimulator(api_key=CANARY, seed=24, run_delay=3600) as sim, _finish_runs_once_polled(sim, 2):
        canary_conn(sim)
        result = run_dag(DEFERRABLE_EXAMPLE, "example_stripe_reports_deferrable", logical_date=DAY)

    assert result.state == "success", result.log_text[-3000:]
    assert "[DAG TEST] running trigger in line" in result.log("wait_for_report_run", map_index=0)
    _assert_no_leak(result)


# -- triggers -------------------------------------------------------------------------------------


def _deferred(task: Any, context: dict[str, Any]) -> Any:
    from airflow.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    return deferred.value


class _TaskInstance:
    """What the operators read of ``context["ti"]``: its identity and ``xcom_push``."""

    dag_id, run_id, map_index, try_number = "secrets", "manual__2024-03-02", -1, 1

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_serialized_triggers_and_their_events_hold_no_key(canary_conn, tmp_path: Path) -> None:
    from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator
    from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor
    from airflow_provider_reportruns.sensors.report_type import StripeReportDataAvailableSensor
    from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger

    end = int(DAY.timestamp())
    with StripeSimulator(api_key=CANARY, seed=25, run_delay=3600, data_available_end=end - 86400) as sim:
        canary_conn(sim)
        hook = StripeReportingHook("stripe_default")
        run = hook.create_report_run(
            "balance.summary.1", {"interval_start": end - 2 * 86400, "interval_end": end - 86400}
        )
        context: dict[str, Any] = {"data_interval_start": DAY - dt.timedelta(days=1), "data_interval_end": DAY}

        run_sensor = StripeReportRunSensor(task_id="wait", report_run_id=run["id"], deferrable=True, poke_interval=0.2)
        data_sensor = StripeReportDataAvailableSensor(
            task_id="data", report_type="balance.summary.1", deferrable=True, poke_interval=0.2
        )
        # The one-task operator's two waits: for the data (Stripe refuses the day: its data ends a
        # day earlier), and for a run it created (the day before, whose data is there).
        store = {"report_type": "balance.summary.1", "destination": str(tmp_path / "r.csv"), "deferrable": True}
        waits_for_data = StripeReportToStorageOperator(task_id="store_data", data_poll_interval=0.2, **store)
        waits_for_run = StripeReportToStorageOperator(
            task_id="store_run", poll_interval=0.2, interval_start=end - 2 * 86400, interval_end=end - 86400, **store
        )
        tis = [_TaskInstance("store_data"), _TaskInstance("store_run")]
        deferrals = [
            _deferred(run_sensor, context),
            _deferred(data_sensor, context),
            _deferred(waits_for_data, {**context, "ti": tis[0]}),
            _deferred(waits_for_run, {**context, "ti": tis[1]}),
        ]
        triggers = [d.trigger for d in deferrals]
        triggers.append(StripeReportRunTrigger(report_run_id=run["id"], poll_interval=0.2, end_time=None))
        serialized = [t.serialize() for t in triggers]

        async def first_event(trigger: Any) -> Any:
            async for event in trigger.run():
                return event.payload

        for pending in sim.report_runs():
            sim.finish_report_run(pending["id"])
        sim.set_data_available_end(end)
        events = [asyncio.run(asyncio.wait_for(first_event(t), 10)) for t in triggers]

    assert {type(t).__name__ for t in triggers} == {"StripeReportRunTrigger", "StripeReportDataAvailableTrigger"}
    for _classpath, kwargs in serialized:
        assert set(kwargs) <= {
            "report_run_id",
            "report_type",
            "interval_end",
            "stripe_conn_id",
            "poll_interval",
            "end_time",
            "first_poll_at",
            "coalesce",
            "created",
        }
        assert all(v is None or isinstance(v, (str, int, float)) for v in kwargs.values()), kwargs
    assert [d.method_name for d in deferrals[2:]] == ["execute_after_data", "execute_complete"]
    assert tis[1].pushed == {}  # the one-task operator pushes no run id XCom
    assert [e["status"] for e in events] == ["succeeded", "available", "available", "succeeded", "succeeded"]
    kept = [serialized, events, [(d.method_name, d.kwargs) for d in deferrals], [ti.pushed for ti in tis]]
    text = json.dumps(kept, default=str)
    assert _leaks(text) == 0


# -- where the key may be sent ------------------------------------------------------------------


class _Recorder(http.server.ThreadingHTTPServer):
    """A host that is not Stripe: records every request's headers, answers with a scripted reply."""

    daemon_threads = True

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"{}") -> None:
        self.seen: list[dict[str, str]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                recorder.seen.append({"path": self.path, **dict(self.headers)})
                self.send_response(status)
                for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def _succeeded_run(sim: StripeSimulator, hook: StripeReportingHook) -> dict[str, Any]:
    run = hook.create_report_run("balance.summary.1", {"interval_start": 1704067200, "interval_end": 1704153600})
    sim.finish_report_run(run["id"])
    return hook.get_report_run(run["id"])


def test_key_is_not_sent_to_a_result_url_on_a_foreign_host(canary_conn, tmp_path: Path) -> None:
    with _Recorder() as foreign, StripeSimulator(api_key=CANARY, seed=26, public_url=foreign.url) as sim:
        canary_conn(sim)
        hook = StripeReportingHook("stripe_default", initial_backoff=0.01)
        run = _succeeded_run(sim, hook)
        assert run["result"]["url"].startswith(foreign.url)

        with pytest.raises(
            StripeReportingError, match=r"Refusing to download a result file from http://127\.0\.0\.1:"
        ) as caught:
            hook.download_report_run(run, tmp_path / "report.csv")

    assert foreign.seen == []
    assert list(tmp_path.iterdir()) == []
    assert _leaks(str(caught.value)) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://files.stripe.com.evil.example/v1/files/file_1/contents",
        "https://evil.example/files.stripe.com/v1/files/file_1/contents",
        "http://files.stripe.com/v1/files/file_1/contents",
        "https://files.stripe.com:8443/v1/files/file_1/contents",
    ],
)
def test_result_urls_that_only_look_like_stripe_are_refused_before_any_request(url: str, monkeypatch) -> None:
    import requests

    from airflow_provider_reportruns.client import StripeReportingClient

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request was sent")

    monkeypatch.setattr(requests.Session, "request", no_network)
    client = StripeReportingClient(CANARY, initial_backoff=0.01)
    with pytest.raises(Exception, match="Refusing to download a result file"):
        client.download_file(url, lambda chunk: None)


def test_a_redirect_from_the_api_host_is_not_followed_with_the_key() -> None:
    from airflow_provider_reportruns.client import StripeError, StripeReportingClient

    with _Recorder() as foreign, _Recorder(302, {"Location": foreign.url + "/steal"}) as api:
        client = StripeReportingClient(CANARY, api_base=api.url, max_retries=0)
        with pytest.raises(StripeError) as caught:
            client.download_file(api.url + "/v1/files/file_1/contents", lambda chunk: None)

    assert len(api.seen) == 1
    assert foreign.seen == []
    assert _leaks(str(caught.value)) == 0


def test_plain_http_to_a_host_that_is_not_loopback_is_refused_before_any_request(airflow_conn, monkeypatch) -> None:
    import requests

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request was sent")

    monkeypatch.setattr(requests.Session, "request", no_network)
    for host in ("http://api.stripe.com", "http://10.0.0.5:12111", "http://stripe-proxy.internal"):
        airflow_conn("stripe_plain", conn_type="stripe", host=host, password=CANARY)
        with pytest.raises(StripeReportingError, match="Refusing plain http://") as caught:
            StripeReportingHook("stripe_plain").list_report_types()
        assert _leaks(str(caught.value)) == 0


def test_an_error_message_that_echoes_the_key_is_scrubbed() -> None:
    from airflow_provider_reportruns.client import StripeReportingClient

    body = json.dumps({"error": {"type": "invalid_request_error", "message": f"bad key {CANARY} here"}}).encode()
    with _Recorder(400, {"Content-Type": "application/json"}, body) as proxy:
        client = StripeReportingClient(CANARY, api_base=proxy.url)
        with pytest.raises(Exception) as caught:
            client.list_report_types()

    assert "bad key sk_test_…" in str(caught.value)
    assert _leaks(str(caught.value)) == 0 and _leaks(str(caught.value.stripe_message)) == 0


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_verification_cannot_be_switched_off(airflow_conn, monkeypatch) -> None:
    import requests
    from requests.adapters import HTTPAdapter

    airflow_conn("stripe_verify", conn_type="stripe", password=CANARY, extra={"verify": False})
    with pytest.raises(StripeReportingError, match="TLS verification cannot be switched off"):
        StripeReportingHook("stripe_verify").list_report_types()

    # Empty CA bundle variables (a classic way to end up with verify=False or '') change nothing:
    # the transport is asked to verify against the default CA store.
    sent: list[Any] = []

    def capture(
        self: HTTPAdapter, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True, **kw: Any
    ) -> Any:
        sent.append((request.url, verify))
        raise requests.ConnectionError("no network in tests")

    monkeypatch.setattr(HTTPAdapter, "send", capture)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    airflow_conn("stripe_tls", conn_type="stripe", password=CANARY)  # empty host: https://api.stripe.com
    hook = StripeReportingHook("stripe_tls", max_retries=0)
    with pytest.raises(StripeReportingError, match="could not be reached"):
        hook.list_report_types()

    assert sent == [("https://api.stripe.com/v1/reporting/report_types", True)]
    assert hook.client.session.verify is True
