"""The built wheel, installed the way a user installs it, registers with Airflow.

Builds the wheel from this checkout, installs it with ``uv`` into a clean venv next to the Airflow
version this suite runs on (pinned by ``requirements/airflow-<version>.txt``), and asks that
Airflow's own CLI what it sees: ``airflow providers list``, ``hooks`` and ``triggers``, and its
ProvidersManager which operator, sensor and trigger modules the provider info lists (the CLI has no
command for those); each must import from the wheel. About 15 s with a warm uv cache; the venv is
thrown away afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_reportruns

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_VERSION = version("apache-airflow")
PINS = ROOT / "requirements" / f"airflow-{AIRFLOW_VERSION}.txt"
PACKAGE = "airflow-provider-reportruns"


def _uv() -> str:
    for candidate in (ROOT / ".venv-tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("uv not found: run `python3 scripts/bootstrap.py` (it installs uv into .venv-tools)")


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built without build isolation (the backend is pinned in this env)."""
    pytest.importorskip("build", reason="`build` is pinned in requirements/dev.in; run scripts/bootstrap.py")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)])
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A clean venv with the wheel and the pinned Airflow; the environment to run its CLI in."""
    assert PINS.exists(), f"no pinned requirements for Airflow {AIRFLOW_VERSION}: {PINS}"
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    uv = _uv()
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    # Compiled byte code: these machines set PYTHONDONTWRITEBYTECODE=1, and each airflow command
    # would otherwise recompile Airflow (twice as slow).
    python = str(venv / "bin" / "python")
    pinned_airflow = f"apache-airflow=={AIRFLOW_VERSION}"
    _run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",
            "--python",
            python,
            "-c",
            str(PINS),
            str(wheel),
            pinned_airflow,
        ]
    )
    home = base / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_CONFIG"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PYTHONPATH": "",
            "NO_COLOR": "1",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    yield venv, env


def _airflow_json(installed: tuple[Path, dict[str, str]], *args: str) -> tuple[list[dict[str, Any]], str]:
    venv, env = installed
    result = _run([str(venv / "bin" / "airflow"), *args, "--output", "json"], env=env, cwd=venv.parent)
    return json.loads(result.stdout), result.stderr


def test_wheel_carries_the_package_its_type_marker_and_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "airflow_provider_reportruns/py.typed" in names
    assert "airflow_provider_reportruns/hooks/connection_form.py" in names
    assert "airflow_provider_reportruns/operators/report_to_storage.py" in names
    assert not [n for n in names if n.startswith(("tests/", "example_dags/", "docs/"))]
    assert "provider_info = airflow_provider_reportruns:get_provider_info" in entry_points
    assert f"Version: {airflow_provider_reportruns.__version__}\n" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_installed_wheel_is_used_not_this_checkout(installed: tuple[Path, dict[str, str]]) -> None:
    venv, env = installed
    code = "import airflow_provider_reportruns as p; print(p.__file__)"
    path = _run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=venv.parent).stdout.strip()
    assert Path(path).is_relative_to(venv), path


def test_airflow_providers_list_shows_the_provider_and_its_version(installed: tuple[Path, dict[str, str]]) -> None:
    providers, stderr = _airflow_json(installed, "providers", "list")
    (ours,) = [p for p in providers if p["package_name"] == PACKAGE]
    assert ours["version"] == airflow_provider_reportruns.__version__
    assert ours["description"].startswith("Stripe Reporting API report runs")
    assert "reportruns" not in stderr, stderr


def test_airflow_providers_hooks_lists_the_stripe_hook(installed: tuple[Path, dict[str, str]]) -> None:
    hooks, stderr = _airflow_json(installed, "providers", "hooks")
    (stripe,) = [h for h in hooks if h["connection_type"] == "stripe"]
    assert stripe["class"] == "airflow_provider_reportruns.hooks.stripe.StripeReportingHook"
    assert stripe["package_name"] == PACKAGE
    assert stripe["hook_name"] == "Stripe"
    assert stripe["conn_id_attribute_name"] == "stripe_conn_id"
    assert "reportruns" not in stderr and "Stripe" not in stderr, stderr


def test_airflow_providers_triggers_lists_the_trigger_modules(installed: tuple[Path, dict[str, str]]) -> None:
    """Airflow lists trigger *modules* (the provider info's ``python-modules``); each holds our classes."""
    triggers, _ = _airflow_json(installed, "providers", "triggers")
    ours = sorted(t["class"] for t in triggers if t["package_name"] == PACKAGE)
    assert ours == [
        "airflow_provider_reportruns.triggers.report_run",
        "airflow_provider_reportruns.triggers.report_type",
    ]
    venv, env = installed
    code = (
        "from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger;"
        "from airflow_provider_reportruns.triggers.report_type import StripeReportDataAvailableTrigger;"
        "print(StripeReportRunTrigger('frr_1').serialize()[0])"
    )
    out = _run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=venv.parent).stdout.strip()
    assert out == "airflow_provider_reportruns.triggers.report_run.StripeReportRunTrigger"


def test_every_module_the_installed_provider_info_lists_imports_from_the_wheel(
    installed: tuple[Path, dict[str, str]],
) -> None:
    """The provider info as that Airflow's ProvidersManager read it from the wheel's entry point,
    and what each listed module defines: the one-task operator's module ships and is registered."""
    code = """
import importlib, inspect, json
from airflow.providers_manager import ProvidersManager
data = ProvidersManager().providers["airflow-provider-reportruns"].data
print(json.dumps({
    role: {
        name: sorted(n for n, c in vars(importlib.import_module(name)).items()
                     if inspect.isclass(c) and c.__module__ == name and n.startswith("Stripe"))
        for entry in data[role] for name in entry["python-modules"]
    }
    for role in ("operators", "sensors", "triggers")
}))
"""
    venv, env = installed
    out = _run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=venv.parent).stdout
    listed = json.loads(out.strip().splitlines()[-1])
    assert listed["operators"] == {
        "airflow_provider_reportruns.operators.report_run": [
            "StripeCreateReportRunOperator",
            "StripeDownloadReportRunOperator",
        ],
        "airflow_provider_reportruns.operators.report_to_storage": ["StripeReportToStorageOperator"],
    }
    assert listed["sensors"] == {
        "airflow_provider_reportruns.sensors.report_run": ["StripeReportRunSensor"],
        "airflow_provider_reportruns.sensors.report_type": ["StripeReportDataAvailableSensor"],
    }
    assert listed["triggers"] == {
        "airflow_provider_reportruns.triggers.report_run": ["StripePollingTrigger", "StripeReportRunTrigger"],
        "airflow_provider_reportruns.triggers.report_type": ["StripeReportDataAvailableTrigger"],
    }
