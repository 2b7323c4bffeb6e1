"""A local stand-in for Stripe's Reporting API (report runs, report types, result files).

Standard library only, so it runs under plain Python next to any Airflow version, and it
imports nothing else from this provider: the client is tested *against* it, not with it.

What it reproduces (API version 2023-08-16): form-encoded creates with Stripe's nested
``parameters[...]`` encoding and its 400 messages, per-type required parameters, columns and data
availability, idempotency keys (replay, parameter mismatch, in-flight 409), ``Stripe-Account``
scoping, cursor-paginated lists, report types, result files served with an exact
``Content-Length``, and scripted faults (429/5xx, resets, slow, broken bodies) drawn from a
seeded random generator so a failing run replays exactly.

The package follows its seams: :mod:`.catalogue` (report types), :mod:`.content` (CSV rows),
:mod:`.state`, :mod:`.rules` and :mod:`.reads` (state and the rules over it), :mod:`.server`
(HTTP), :mod:`.control` (``StripeSimulator``), with :mod:`.errors`, :mod:`.forms` and
:mod:`.faults` beside them.
"""

from __future__ import annotations

from airflow_provider_reportruns.testing.simulator.catalogue import (
    DEFAULT_DATA_AVAILABLE_START,
    DEFAULT_LIVE_ONLY_REPORT_TYPES,
    REPORT_TYPE_IDS,
)
from airflow_provider_reportruns.testing.simulator.control import StripeSimulator
from airflow_provider_reportruns.testing.simulator.faults import FAULT_NAMES, REQUEST_KINDS, Fault
from airflow_provider_reportruns.testing.simulator.forms import decode_form
from airflow_provider_reportruns.testing.simulator.server import API_VERSION
from airflow_provider_reportruns.testing.simulator.state import (
    DEFAULT_API_KEY,
    DEFAULT_FAILURE_MESSAGE,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    REQUIRED_PERMISSION,
    RunDelay,
    SimulatorRequest,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "DEFAULT_DATA_AVAILABLE_START",
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_LIVE_ONLY_REPORT_TYPES",
    "FAULT_NAMES",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "REPORT_TYPE_IDS",
    "REQUEST_KINDS",
    "REQUIRED_PERMISSION",
    "Fault",
    "RunDelay",
    "SimulatorRequest",
    "StripeSimulator",
    "decode_form",
]
