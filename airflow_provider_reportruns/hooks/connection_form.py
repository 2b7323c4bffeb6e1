"""The Stripe connection form, declared once for both Airflow UIs.

Airflow 3 reads it from :func:`~airflow_provider_reportruns.get_provider_info` (``conn-fields`` and
``ui-field-behaviour``) without importing the hook; the Airflow 2 webserver asks the hook
(``get_connection_form_widgets`` / ``get_ui_field_behaviour``), which builds its WTForms fields from
the same declarations. Standard library only and no imports at all: ``get_provider_info()`` runs in
every Airflow process that lists providers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "CONN_TYPE",
    "EXTRA_FIELDS",
    "HIDDEN_FIELDS",
    "HOOK_CLASS_NAME",
    "HOOK_NAME",
    "PLACEHOLDERS",
    "RELABELING",
    "ExtraField",
    "connection_type_info",
    "ui_field_behaviour",
]

CONN_TYPE = "stripe"
HOOK_NAME = "Stripe"
HOOK_CLASS_NAME = "airflow_provider_reportruns.hooks.stripe.StripeReportingHook"

# A Stripe connection is a secret key and, rarely, another API base URL (the simulator).
HIDDEN_FIELDS: tuple[str, ...] = ("login", "schema", "port")
RELABELING: dict[str, str] = {"password": "Secret key", "host": "API base URL (optional)"}


class ExtraField(NamedTuple):
    """One field stored in the connection's extras (the names the hook reads)."""

    label: str
    description: str
    placeholder: str
    # JSON schema type for Airflow 3; Airflow 2 shows every field as text (the hook converts).
    type: str = "string"


EXTRA_FIELDS: dict[str, ExtraField] = {
    "stripe_account": ExtraField(
        "Connected account",
        "Optional. A connected account id (acct_…): every call acts for that account (Stripe-Account header).",
        "acct_… (optional: act for a connected account)",
    ),
    "api_version": ExtraField(
        "API version",
        "Optional. Pins the Stripe API version (Stripe-Version header); empty uses your account's default.",
        "e.g. 2023-08-16 (optional: pin Stripe-Version)",
    ),
    "max_requests_per_second": ExtraField(
        "Max requests per second",
        "Optional. Client-side limit shared by every task of a worker process using this key (default 20).",
        "20",
        "number",
    ),
}

# client.DEFAULT_API_BASE; repeated here so that listing providers imports nothing (a test checks they match).
PLACEHOLDERS: dict[str, str] = {
    "password": "sk_live_… or rk_live_…",
    "host": "https://api.stripe.com",
    **{name: field.placeholder for name, field in EXTRA_FIELDS.items()},
}


def ui_field_behaviour() -> dict[str, Any]:
    """The standard fields' behaviour in the shape of ``BaseHook.get_ui_field_behaviour()`` (Airflow 2)."""
    return {
        "hidden_fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": dict(PLACEHOLDERS),
    }


def connection_type_info() -> dict[str, Any]:
    """The ``connection-types`` entry of the provider info, with the form Airflow 3 reads from it."""
    return {
        "connection-type": CONN_TYPE,
        "hook-class-name": HOOK_CLASS_NAME,
        "hook-name": HOOK_NAME,
        "conn-fields": {
            name: {
                "label": field.label,
                "description": field.description,
                "schema": {"type": [field.type, "null"]},
            }
            for name, field in EXTRA_FIELDS.items()
        },
        "ui-field-behaviour": {
            "hidden-fields": list(HIDDEN_FIELDS),
            "relabeling": dict(RELABELING),
            "placeholders": dict(PLACEHOLDERS),
        },
    }
