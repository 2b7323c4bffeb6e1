"""The steps the report operators are composed of: build the request, find a run to reuse,
create one, wait for it, download its result file.

Each step takes what it needs as arguments and returns what it found; nothing is kept on the
operator. The create operator, the one-task operator (and any transfer built on them) run the
same steps in the same order.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_reportruns.operators.steps.create import (
        create_or_reuse,
        create_run,
        data_comes_later,
        with_data_hint,
        with_report_type_suggestion,
    )
    from airflow_provider_reportruns.operators.steps.data import data_timeout_message, wait_for_data
    from airflow_provider_reportruns.operators.steps.destination import (
        DESTINATION_TOKEN,
        RUN_TOKENS,
        asset_uri,
        check_destination,
        destination_for,
        destination_tokens,
        download_result,
    )
    from airflow_provider_reportruns.operators.steps.request import (
        RunRequest,
        build_parameters,
        permanent,
        reuse_lookback_seconds,
    )
    from airflow_provider_reportruns.operators.steps.reuse import (
        DEFAULT_REUSE_LOOKBACK,
        INTERVAL_TOKENS,
        TYPICAL_RUNS,
        ReuseLookup,
        find_reusable_run,
        normalized_parameters,
    )
    from airflow_provider_reportruns.operators.steps.wait import (
        INLINE_FIRST_POLL_SECONDS,
        defer_run_wait,
        run_succeeded,
        run_timeout_message,
        wait_for_run,
    )

__all__ = [
    "DEFAULT_REUSE_LOOKBACK",
    "DESTINATION_TOKEN",
    "INLINE_FIRST_POLL_SECONDS",
    "INTERVAL_TOKENS",
    "RUN_TOKENS",
    "TYPICAL_RUNS",
    "ReuseLookup",
    "RunRequest",
    "asset_uri",
    "build_parameters",
    "check_destination",
    "create_or_reuse",
    "create_run",
    "data_comes_later",
    "data_timeout_message",
    "defer_run_wait",
    "destination_for",
    "destination_tokens",
    "download_result",
    "find_reusable_run",
    "normalized_parameters",
    "permanent",
    "reuse_lookback_seconds",
    "run_succeeded",
    "run_timeout_message",
    "wait_for_data",
    "wait_for_run",
    "with_data_hint",
    "with_report_type_suggestion",
]

# The steps load on first use (PEP 562): the operator modules are imported at every DAG parse,
# and the wait and reuse steps pull in the client, which a parse never needs.
_MODULES = {
    "DEFAULT_REUSE_LOOKBACK": "reuse",
    "DESTINATION_TOKEN": "destination",
    "INLINE_FIRST_POLL_SECONDS": "wait",
    "INTERVAL_TOKENS": "reuse",
    "RUN_TOKENS": "destination",
    "ReuseLookup": "reuse",
    "RunRequest": "request",
    "TYPICAL_RUNS": "reuse",
    "asset_uri": "destination",
    "build_parameters": "request",
    "check_destination": "destination",
    "create_or_reuse": "create",
    "create_run": "create",
    "data_comes_later": "create",
    "data_timeout_message": "data",
    "defer_run_wait": "wait",
    "destination_for": "destination",
    "destination_tokens": "destination",
    "download_result": "destination",
    "find_reusable_run": "reuse",
    "normalized_parameters": "reuse",
    "permanent": "request",
    "reuse_lookback_seconds": "request",
    "run_succeeded": "wait",
    "run_timeout_message": "wait",
    "wait_for_data": "data",
    "wait_for_run": "wait",
    "with_data_hint": "create",
    "with_report_type_suggestion": "create",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
