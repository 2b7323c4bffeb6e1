"""Airflow discovers this provider through its ``apache_airflow_provider`` entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import distribution

import airflow_provider_reportruns

PACKAGE = "airflow-provider-reportruns"
HOOK_CLASS = "airflow_provider_reportruns.hooks.stripe.StripeReportingHook"


def _providers_manager():  # imported lazily: importing airflow costs ~2 s on 3.x
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_package_name_is_the_normalized_distribution_name() -> None:
    # ProvidersManager rejects provider info whose package-name differs from the distribution.
    dist_name = re.sub(r"[-_.]+", "-", distribution(PACKAGE).metadata["Name"]).lower()
    assert airflow_provider_reportruns.get_provider_info()["package-name"] == dist_name


def test_providers_manager_lists_the_provider_with_its_stripe_connection_type() -> None:
    provider = _providers_manager().providers[PACKAGE]

    assert provider.version == airflow_provider_reportruns.__version__
    [stripe] = [c for c in provider.data["connection-types"] if c["connection-type"] == "stripe"]
    assert (stripe["hook-class-name"], stripe["hook-name"]) == (HOOK_CLASS, "Stripe")


def _hooks():
    try:  # Airflow 3.3: hooks moved to the task SDK's manager (the old property warns)
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        return _providers_manager().hooks
    return ProvidersManagerTaskRuntime().hooks


def test_stripe_connection_type_resolves_to_the_hook_class() -> None:
    # This imports the hook: Airflow drops a connection type whose hook does not import.
    hook = _hooks()["stripe"]

    assert hook is not None, f"Airflow could not import {HOOK_CLASS}"
    assert hook.hook_class_name == HOOK_CLASS
    assert hook.package_name == PACKAGE


def test_airflow_providers_list_cli_shows_the_provider() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    listed = {p["package_name"]: p for p in json.loads(completed.stdout)}
    assert listed[PACKAGE]["version"] == airflow_provider_reportruns.__version__


# What the provider info lists, by role: every module that defines a hook, operator, sensor or
# trigger class. Airflow lists the trigger modules (`airflow providers triggers`); the operator and
# sensor lists are what provider documentation and tooling read.
ROLE_MODULES = {
    "hooks": ["airflow_provider_reportruns.hooks.stripe"],
    "operators": [
        "airflow_provider_reportruns.operators.report_run",
        "airflow_provider_reportruns.operators.report_to_storage",
    ],
    "sensors": [
        "airflow_provider_reportruns.sensors.report_run",
        "airflow_provider_reportruns.sensors.report_type",
    ],
    "triggers": [
        "airflow_provider_reportruns.triggers.report_run",
        "airflow_provider_reportruns.triggers.report_type",
    ],
}


def _modules_defining(role_package: str) -> list[str]:
    """Modules of ``airflow_provider_reportruns.<role_package>`` that define a class of that role."""
    import importlib
    import inspect
    import pkgutil

    from airflow.triggers.base import BaseTrigger

    from airflow_provider_reportruns._compat import BaseHook, BaseOperator, BaseSensorOperator

    def role(cls: type) -> str | None:
        for base, name in ((BaseSensorOperator, "sensors"), (BaseOperator, "operators")):
            if issubclass(cls, base):
                return name
        return "hooks" if issubclass(cls, BaseHook) else "triggers" if issubclass(cls, BaseTrigger) else None

    package = importlib.import_module(f"airflow_provider_reportruns.{role_package}")
    found = []
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        classes = [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__]
        if any(role(c) == role_package for c in classes):
            found.append(module.__name__)
    return sorted(found)


def test_provider_info_lists_every_module_that_defines_a_hook_operator_sensor_or_trigger() -> None:
    data = _providers_manager().providers[PACKAGE].data
    listed = {role: sorted(m for entry in data[role] for m in entry["python-modules"]) for role in ROLE_MODULES}

    assert listed == ROLE_MODULES
    # ... and no module that defines one is missing (a new operator module must be added there).
    assert {role: _modules_defining(role) for role in ROLE_MODULES} == ROLE_MODULES
