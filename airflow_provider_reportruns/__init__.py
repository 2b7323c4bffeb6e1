"""Apache Airflow provider for Stripe Reporting API report runs."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

    Airflow 3 also reads the Stripe connection form from here (``conn-fields``, ``ui-field-behaviour``).
    """
    from airflow_provider_reportruns.hooks.connection_form import connection_type_info

    return {
        "package-name": "airflow-provider-reportruns",
        "name": "Stripe Reporting",
        "description": "Stripe Reporting API report runs: create, wait, download, backfill.",
        "versions": [__version__],
        "connection-types": [connection_type_info()],
        "hooks": [
            {
                "integration-name": "Stripe Reporting",
                "python-modules": ["airflow_provider_reportruns.hooks.stripe"],
            }
        ],
        "operators": [
            {
                "integration-name": "Stripe Reporting",
                "python-modules": [
                    "airflow_provider_reportruns.operators.report_run",
                    "airflow_provider_reportruns.operators.report_to_storage",
                ],
            }
        ],
        "transfers": [
            {
                "source-integration-name": "Stripe Reporting",
                "target-integration-name": "Common SQL",
                "python-module": "airflow_provider_reportruns.transfers.report_to_sql",
            }
        ],
        "sensors": [
            {
                "integration-name": "Stripe Reporting",
                "python-modules": [
                    "airflow_provider_reportruns.sensors.report_run",
                    "airflow_provider_reportruns.sensors.report_type",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Stripe Reporting",
                "python-modules": [
                    "airflow_provider_reportruns.triggers.report_run",
                    "airflow_provider_reportruns.triggers.report_type",
                ],
            }
        ],
    }
