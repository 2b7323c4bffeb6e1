"""Transfers: a report run's result file taken somewhere else (a database table), built from the
same steps as the report operators.

The names load on first use: the operator module is imported at every DAG parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator

__all__ = ["StripeReportToSqlOperator"]


def __getattr__(name: str) -> Any:
    if name == "StripeReportToSqlOperator":
        from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator

        return StripeReportToSqlOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
