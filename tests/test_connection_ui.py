"""The Stripe connection in Airflow's UI: one form declaration for both versions, and the Test button.

The form is declared once (``hooks/connection_form.py``); Airflow 3 reads it from the provider
info, the Airflow 2 webserver from the hook. The Test button's messages are checked against the
simulator for the four outcomes a person meets: success, a rejected key, a missing permission and
an unreachable host.
"""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from airflow_harness import airflow_major, connection_env

from airflow_provider_reportruns import get_provider_info
from airflow_provider_reportruns.hooks import connection_form

AIRFLOW_3 = airflow_major() >= 3
SIMULATOR_KEY = "sk_test_simulator"
RESTRICTED_WITH_PERMISSION = "rk_test_reportsReadOK1234"
RESTRICTED_WITHOUT_PERMISSION = "rk_test_noReportsRead5678"


def _stripe_conn_type() -> dict[str, Any]:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "stripe"]
    return entry


# -- one declaration, two UIs ------------------------------------------------------------------------


def test_provider_info_passes_airflows_own_schemas() -> None:
    """The runtime schema of the installed Airflow, and (3.x) the strict provider.yaml schema for the form."""
    import importlib.resources

    import jsonschema

    runtime = json.loads(importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), runtime)
    if AIRFLOW_3:
        strict = json.loads(importlib.resources.files("airflow").joinpath("provider.yaml.schema.json").read_text())
        item_schema = strict["properties"]["connection-types"]["items"]
        jsonschema.validate(_stripe_conn_type(), item_schema)


def test_form_relabels_the_key_and_hides_what_stripe_does_not_use() -> None:
    behaviour = _stripe_conn_type()["ui-field-behaviour"]
    assert sorted(behaviour["hidden-fields"]) == ["login", "port", "schema"]
    assert behaviour["relabeling"] == {"password": "Secret key", "host": "API base URL (optional)"}
    assert behaviour["placeholders"]["password"] == "sk_live_… or rk_live_…"
    assert set(_stripe_conn_type()["conn-fields"]) == {"stripe_account", "api_version", "max_requests_per_second"}


def test_placeholders_show_the_clients_defaults() -> None:
    from airflow_provider_reportruns.client import DEFAULT_API_BASE, DEFAULT_MAX_REQUESTS_PER_SECOND

    placeholders = connection_form.PLACEHOLDERS
    assert placeholders["host"] == DEFAULT_API_BASE
    assert float(placeholders["max_requests_per_second"]) == DEFAULT_MAX_REQUESTS_PER_SECOND


def test_every_form_field_is_an_extra_the_hook_reads() -> None:
    from airflow_provider_reportruns.hooks.stripe import CONNECTION_EXTRAS

    assert set(_stripe_conn_type()["conn-fields"]) <= set(CONNECTION_EXTRAS)


def test_airflow2_hook_methods_declare_the_same_form_as_the_provider_info() -> None:
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

    info = _stripe_conn_type()
    behaviour = StripeReportingHook.get_ui_field_behaviour()
    assert behaviour == {
        "hidden_fields": info["ui-field-behaviour"]["hidden-fields"],
        "relabeling": info["ui-field-behaviour"]["relabeling"],
        "placeholders": info["ui-field-behaviour"]["placeholders"],
    }
    pytest.importorskip("flask_appbuilder", reason="the Airflow 2 form widgets need flask_appbuilder (Airflow 2)")
    widgets = StripeReportingHook.get_connection_form_widgets()
    assert list(widgets) == list(info["conn-fields"])
    for name, widget in widgets.items():
        assert str(widget.args[0]) == info["conn-fields"][name]["label"]
        assert widget.kwargs["description"] == info["conn-fields"][name]["description"]


def test_hook_module_imports_no_ui_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, airflow_provider_reportruns.hooks.stripe, airflow_provider_reportruns;"
        "airflow_provider_reportruns.get_provider_info();"
        "print(sorted(m for m in ('wtforms', 'flask_appbuilder', 'flask_babel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3 reads the form from the provider info (3.x only)")
def test_airflow3_ui_receives_the_form_without_calling_deprecated_hook_methods() -> None:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    pm.initialize_providers_hooks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook_info = pm._import_hook(connection_type="stripe", provider_info=pm.providers["airflow-provider-reportruns"])
    assert hook_info is not None and hook_info.hook_name == "Stripe"
    assert not [w for w in caught if "StripeReportingHook" in str(w.message)]

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "stripe"]
    fields = meta.standard_fields
    assert fields is not None and fields.password is not None and fields.host is not None
    assert (fields.password.title, fields.password.placeholder) == ("Secret key", "sk_live_… or rk_live_…")
    assert (fields.host.title, fields.host.placeholder) == ("API base URL (optional)", "https://api.stripe.com")
    for hidden in (fields.login, fields.port, fields.url_schema):
        assert hidden is not None and hidden.hidden
    assert meta.extra_fields is not None
    titles = {name: field["schema"]["title"] for name, field in meta.extra_fields.items()}
    assert titles == {
        "stripe_account": "Connected account",
        "api_version": "API version",
        "max_requests_per_second": "Max requests per second",
    }
    assert meta.extra_fields["max_requests_per_second"]["schema"]["type"] == ["number", "null"]


@pytest.mark.skipif(AIRFLOW_3, reason="the Flask webserver connection form exists on Airflow 2 only")
def test_airflow2_webserver_form_saves_a_connection_the_hook_can_test(
    airflow_db: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, stripe_simulator: Any
) -> None:
    """Render /connection/add on 2.11 and submit it: the saved extras are the ones the hook reads."""
    config = tmp_path / "webserver_config.py"
    config.write_text('AUTH_ROLE_PUBLIC = "Admin"\nWTF_CSRF_ENABLED = False\n')
    monkeypatch.setenv("AIRFLOW__WEBSERVER__CONFIG_FILE", str(config))
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from airflow.www.app import create_app

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

    app = create_app(testing=True)
    with app.test_client() as client:
        page = client.get("/connection/add").data.decode()
        for name in ("stripe_account", "api_version", "max_requests_per_second"):
            assert f'name="extra__stripe__{name}"' in page
        assert "Secret key" in page and "API base URL (optional)" in page  # field behaviours shipped to the page
        form = {
            "conn_id": "stripe_from_form",
            "conn_type": "stripe",
            "host": stripe_simulator.url,
            "password": stripe_simulator.api_key,
            "extra__stripe__stripe_account": "acct_1FormTest",
            "extra__stripe__api_version": "",
            "extra__stripe__max_requests_per_second": "5",
        }
        assert client.post("/connection/add", data=form, follow_redirects=True).status_code == 200
    try:
        ok, message = StripeReportingHook("stripe_from_form").test_connection()
        assert ok, message
        assert "for connected account acct_1FormTest" in message
        assert stripe_simulator.requests()[-1].headers.get("Stripe-Account") == "acct_1FormTest"
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "stripe_from_form").delete()


# -- the Test button ---------------------------------------------------------------------------------


@pytest.fixture
def press_test(stripe_simulator_factory: Any) -> Iterator[Any]:
    """Press "Test" the way Airflow does: ``Connection.test_connection()`` on a connection from the
    environment (the API server exports the form under a random id, then calls exactly this)."""
    from airflow.models.connection import Connection

    simulator = stripe_simulator_factory(
        restricted_keys={RESTRICTED_WITH_PERMISSION: True, RESTRICTED_WITHOUT_PERMISSION: False}
    )

    def press(password: str, host: str | None = None, **extra: Any) -> tuple[bool, str]:
        fields = {"conn_type": "stripe", "password": password, "host": host or simulator.url, "extra": extra}
        with connection_env("xK3pQ9zR2m", **fields):
            conn = Connection(conn_id="xK3pQ9zR2m", **{**fields, "extra": json.dumps(extra)})
            return conn.test_connection()

    press.simulator = simulator  # type: ignore[attr-defined]
    yield press


def test_button_reports_success_with_mode_and_report_type_count(press_test: Any) -> None:
    ok, message = press_test(SIMULATOR_KEY)
    simulator = press_test.simulator
    assert ok
    assert message == (
        f"Connected to Stripe at {simulator.url} with a test-mode key: it may read report runs and report types "
        "(25 report types visible)."
    )
    assert [r.path for r in simulator.requests()] == ["/v1/reporting/report_types"]


def test_button_names_the_connected_account(press_test: Any) -> None:
    ok, message = press_test(SIMULATOR_KEY, stripe_account="acct_1Connected")
    assert ok and " for connected account acct_1Connected:" in message


def test_button_accepts_a_restricted_key_with_the_reporting_permission(press_test: Any) -> None:
    ok, message = press_test(RESTRICTED_WITH_PERMISSION)
    assert ok, message


@pytest.mark.parametrize("mode", ["test", "live"])
def test_button_explains_a_rejected_key_and_advises_a_key_of_the_same_mode(press_test: Any, mode: str) -> None:
    ok, message = press_test(f"sk_{mode}_notTheRightKey42")
    assert not ok
    assert message.startswith(f"Stripe rejected the secret key (401): Invalid API Key provided: sk_{mode}_")
    assert message.endswith(
        f"Put a secret key (sk_{mode}_…) or a restricted key (rk_{mode}_…) from the Stripe Dashboard "
        "(Developers → API keys) in the Secret key field."
    )
    assert "notTheRightKey42" not in message


def test_button_explains_a_missing_permission(press_test: Any) -> None:
    ok, message = press_test(RESTRICTED_WITHOUT_PERMISSION)
    assert not ok
    assert message.startswith("The key is valid but lacks a permission (403): The provided key 'rk_test_***")
    assert message.endswith(
        "Give the restricted key Read access to report runs and report types "
        "(report_runs_and_report_types_read), or use a secret key."
    )


def test_button_explains_an_unreachable_host_quickly(press_test: Any) -> None:
    import time

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    ok, message = press_test(SIMULATOR_KEY, host=f"http://127.0.0.1:{port}")
    assert not ok
    assert message == (
        f"Stripe at http://127.0.0.1:{port} could not be reached. Check the API base URL (leave it empty for "
        "https://api.stripe.com) and that this Airflow component may open HTTPS connections to it."
    )
    assert time.monotonic() - started < 2, "the test button must not sit through the retry backoff"


def test_button_explains_a_publishable_key_without_the_random_connection_id(press_test: Any) -> None:
    ok, message = press_test("pk_test_publishable123")
    assert not ok
    assert message.startswith("The Stripe key in this connection is a publishable key (pk_…)")
    assert "xK3pQ9zR2m" not in message


def test_button_explains_a_typo_in_the_extras(press_test: Any) -> None:
    ok, message = press_test(SIMULATOR_KEY, stripe_acount="acct_1")
    assert not ok
    assert message.startswith("Unknown extra field(s) stripe_acount in this connection; allowed: stripe_account,")


def test_button_leaves_the_hooks_retry_setting_alone() -> None:
    """The test call is not retried, but the hook keeps its configured retries for real work."""
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

    with connection_env("stripe_retries", conn_type="stripe", password="sk_test_x", host="http://127.0.0.1:9"):
        hook = StripeReportingHook("stripe_retries", max_retries=2)
        assert not hook.test_connection()[0]
        assert hook.client.max_retries == 2
