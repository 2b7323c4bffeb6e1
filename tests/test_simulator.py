"""StripeSimulator itself: run lifecycle, the test controls, the pytest plugin, the CLI, the package shape."""

from __future__ import annotations

import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from _openapi import validate_component, validate_response
from _simulator_api import (  # noqa: F401
    AVAILABLE_END,
    MAY_8,
    RUNS,
    T0,
    TYPES,
    Api,
    FakeClock,
    api,
    clock,
    interval_form,
    sim,
    succeeded,
)

from airflow_provider_reportruns.testing import StripeSimulator
from airflow_provider_reportruns.testing import simulator as simulator_package

# ------------------------------------------------------------------------------------ lifecycle


def test_run_is_pending_until_run_delay_then_succeeds_in_real_time() -> None:
    with StripeSimulator(run_delay=0.3, data_available_end=AVAILABLE_END) as sim:
        api = Api(sim)
        created = api.create(interval_form()).json()
        assert created["status"] == "pending"
        assert api.get(f"{RUNS}/{created['id']}").json()["status"] == "pending"
        time.sleep(0.35)
        done = api.get(f"{RUNS}/{created['id']}").json()
    assert done["status"] == "succeeded"
    assert done["succeeded_at"] >= created["created"]
    assert done["result"]["size"] == len(sim.result_content(created["id"]))


def test_run_state_follows_the_clock_and_validates_against_the_schema(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    response = api.create(interval_form())
    assert response.status_code == 200
    run = response.json()
    validate_component(run, "reporting.report_run", strict=True)
    validate_response(run, "post", RUNS, strict=True)
    assert run["id"].startswith("frr_") and len(run["id"]) == 28 and run["id"][4:].isalnum()
    assert (run["status"], run["result"], run["succeeded_at"], run["error"]) == ("pending", None, None, None)
    assert run["created"] == int(T0) and run["livemode"] is False
    assert sim.succeeded_at(run["id"]) == T0 + 30

    clock.advance(29.9)
    assert api.get(f"{RUNS}/{run['id']}").json()["status"] == "pending"
    clock.advance(0.1)
    done = api.get(f"{RUNS}/{run['id']}").json()
    validate_response(done, "get", RUNS + "/{report_run}", strict=True)
    assert done["status"] == "succeeded" and done["succeeded_at"] == int(T0 + 30)
    result = done["result"]
    assert result["id"].startswith("file_") and len(result["id"]) == 29
    assert result["url"] == f"{sim.url}/v1/files/{result['id']}/contents"
    assert result["expires_at"] == int(T0 + 30 + 3600)
    assert (result["purpose"], result["type"], result["object"]) == ("finance_report_run", "csv", "file")
    assert result["links"] == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": f"/v1/file_links?file={result['id']}",
    }
    assert sim.report_runs() == [done]


def test_create_answers_pending_even_with_zero_delay(clock: FakeClock) -> None:
    with StripeSimulator(run_delay=0, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        run = api.create(interval_form()).json()
        assert run["status"] == "pending"
        assert api.get(f"{RUNS}/{run['id']}").json()["status"] == "succeeded"


def test_failed_report_types_end_failed_with_the_failure_message(clock: FakeClock) -> None:
    with StripeSimulator(
        run_delay=1,
        fail_report_types=["payouts.itemized.3"],
        failure_message="Report generation failed.",
        data_available_end=AVAILABLE_END,
        clock=clock,
    ) as sim:
        api = Api(sim)
        failing = api.create(interval_form("payouts.itemized.3")).json()
        fine = api.create(interval_form("payouts.itemized.1")).json()
        clock.advance(1)
        failed = api.get(f"{RUNS}/{failing['id']}").json()
        succeeded = api.get(f"{RUNS}/{fine['id']}").json()
    validate_component(failed, "reporting.report_run", strict=True)
    assert (failed["status"], failed["error"], failed["result"], failed["succeeded_at"]) == (
        "failed",
        "Report generation failed.",
        None,
        None,
    )
    assert succeeded["status"] == "succeeded"


def test_finish_report_run_forces_any_status(sim: StripeSimulator, api: Api, clock: FakeClock) -> None:
    first = api.create(interval_form()).json()["id"]
    second = api.create(interval_form()).json()["id"]
    third = api.create(interval_form()).json()["id"]
    sim.finish_report_run(first, "failed", error="Boom.")
    sim.finish_report_run(second, "canceled")
    sim.finish_report_run(third)
    runs = {r["id"]: r for r in api.get(RUNS).json()["data"]}
    assert (runs[first]["status"], runs[first]["error"]) == ("failed", "Boom.")
    assert (runs[second]["status"], runs[second]["result"]) == ("canceled", None)
    assert runs[third]["status"] == "succeeded" and runs[third]["result"]["size"] > 0
    assert sim.succeeded_at(third) == clock.now
    assert sim.succeeded_at(second) == float("inf")
    for run in runs.values():
        validate_component(run, "reporting.report_run", strict=True)


def test_callable_run_delay_staggers_completion(clock: FakeClock) -> None:
    seen: list[tuple[str, dict, int]] = []

    def delay(report_type: str, parameters: Any, sequence_no: int) -> float:
        seen.append((report_type, dict(parameters), sequence_no))
        return 10.0 * sequence_no

    with StripeSimulator(run_delay=delay, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        ids = [api.create(interval_form()).json()["id"] for _ in range(3)]
        clock.advance(15)
        statuses = [api.get(f"{RUNS}/{i}").json()["status"] for i in ids]
        assert [sim.succeeded_at(i) for i in ids] == [T0, T0 + 10, T0 + 20]
    assert statuses == ["succeeded", "succeeded", "pending"]
    assert seen[2] == ("balance.summary.1", {"interval_start": MAY_8, "interval_end": AVAILABLE_END}, 2)


# ------------------------------------------------------------------------------------ pytest plugin and CLI


def test_connection_fixture_points_airflow_at_the_simulator(stripe_simulator_connection: StripeSimulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_STRIPE_DEFAULT"])
    assert conn == {
        "conn_type": "stripe",
        "password": stripe_simulator_connection.api_key,
        "host": stripe_simulator_connection.url,
    }
    assert Api(stripe_simulator_connection).get(TYPES).status_code == 200


@pytest.mark.stripe_simulator(run_delay=5.0, api_key="sk_test_marker")
def test_marker_configures_the_fixture(stripe_simulator: StripeSimulator) -> None:
    assert (stripe_simulator.run_delay, stripe_simulator.api_key) == (5.0, "sk_test_marker")
    assert Api(stripe_simulator).get(TYPES).status_code == 200


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_reportruns.testing",
            "--port",
            "0",
            "--api-key",
            "sk_test_cli",
            "--run-delay",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "simulator did not become ready"
            time.sleep(0.02)
        url = ready.read_text().strip()
        response = requests.get(url + TYPES, headers={"Authorization": "Bearer sk_test_cli"}, timeout=5)
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    line = next(x for x in out.splitlines() if x.startswith("AIRFLOW_CONN_STRIPE_DEFAULT="))
    conn = json.loads(shlex.split(line.split("=", 1)[1])[0])
    assert conn == {"conn_type": "stripe", "password": "sk_test_cli", "host": url}
    assert url in out


def test_simulator_imports_only_the_standard_library_and_the_plugin_imports_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import airflow_provider_reportruns.testing\n"
        "import airflow_provider_reportruns.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('airflow_provider_reportruns.testing.simulator')\n"
        "             or m == 'http.server'))\n"
        "import airflow_provider_reportruns.testing.simulator\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'requests', 'urllib3')\n"
        "             or m in ('airflow_provider_reportruns.client', 'airflow_provider_reportruns.hooks')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "[]"]


def test_simulator_modules_stay_small_and_share_no_private_names() -> None:
    package = Path(simulator_package.__file__).parent
    private_imports = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, f"{path.name} wants splitting"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_provider_reportruns"):
                private_imports += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private_imports == []
