"""The Stripe connection in a real Airflow 3 UI, driven by headless Chromium.

Starts ``airflow api-server`` on loopback (throw-away ``AIRFLOW_HOME``, migrated SQLite DB, simple
auth manager with everyone admin, connection testing enabled) with this provider installed, adds a
Stripe connection through the form, and presses "Test" in the connection list: once with the
simulator's key (success), once with a wrong key (rejection). Screenshots go to ``tests/artifacts/``.

Driver: selenium with Debian's ``chromium`` and ``chromium-driver`` (same version, no download at
run time). Skipped on Airflow 2 and where Chromium, chromedriver or selenium are missing.

Airflow 3.3.2 bug worked around here: the list's Test button sends ``port: 0`` for a connection
without a port, and the API compares that with the stored NULL and answers 400 "Bad Request" for
every port-less connection (any provider). apache/airflow#73298 fixes it in the API by treating 0
like blank; the API server below gets that one-line fix backported *only if* the installed Airflow
still has the bug, which ``test_airflow_still_needs_the_port_zero_backport`` keeps track of.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_harness import airflow_major

pytestmark = pytest.mark.skipif(
    airflow_major() < 3, reason="the React connection UI and `airflow api-server` are Airflow 3 only"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SERVER_START_TIMEOUT = 120.0
UI_TIMEOUT = 30.0

# The flags a closed network needs: without the background-networking ones Chromium keeps
# opening connections that are refused, and pages stall.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
)

# Runs in the API server process before Airflow's CLI: upstream's fix for the 3.3.2 bug above.
SERVER_BOOT = """
import sys
from airflow.api_fastapi.core_api.routes.public import connections as routes

if not routes._same_endpoint(0, None):  # apache/airflow#73298: 0 means "no port" as "" does
    _same_endpoint = routes._same_endpoint
    routes._same_endpoint = lambda requested, stored: _same_endpoint(None if requested == 0 else requested, stored)
from airflow.__main__ import main

sys.argv = ["airflow", *sys.argv[1:]]
main()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_CONFIG"))}
    (home / "dags").mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "NO_COLOR": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def api_server() -> Iterator[str]:
    """A migrated throw-away Airflow 3 with its API server (and UI) on a loopback port."""
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (requirements/test.txt)")
    home = Path(tempfile.mkdtemp(prefix="reportruns-ui-home-"))
    env = _server_env(home)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    port = _free_port()
    log = open(home / "api-server.log", "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_BOOT, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"airflow api-server exited with {server.returncode}:\n{(home / 'api-server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server did not answer within {SERVER_START_TIMEOUT:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        if os.environ.get("REPORTRUNS_KEEP_AIRFLOW_HOME") != "1":
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="reportruns-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(UI_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class ConnectionsPage:
    """The few things a person does on Admin → Connections, in selenium terms."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url

    def by(self) -> Any:
        from selenium.webdriver.common.by import By

        return By

    def open_add_dialog(self, conn_id: str, conn_type: str) -> Any:
        from selenium.webdriver.common.keys import Keys

        By = self.by()
        self.driver.get(f"{self.url}/connections")
        self.driver.find_element(By.XPATH, "//button[normalize-space()='Add Connection']").click()
        dialog = self.driver.find_element(By.CSS_SELECTOR, "[role=dialog]")
        dialog.find_element(By.NAME, "connection_id").send_keys(conn_id)
        combo = dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
        combo.send_keys(conn_type)
        self.driver.find_element(By.XPATH, f"//*[@role='option' and normalize-space()='{conn_type}']")
        combo.send_keys(Keys.ENTER)
        dialog.find_element(By.NAME, "password")  # the type's fields are rendered
        return dialog

    def labels(self, dialog: Any) -> list[str]:
        return [label.text.strip() for label in dialog.find_elements(self.by().TAG_NAME, "label") if label.text.strip()]

    def open_section(self, dialog: Any, title: str) -> None:
        dialog.find_element(self.by().XPATH, f".//button[normalize-space()='{title}']").click()

    def save(self, dialog: Any, conn_id: str) -> None:
        By = self.by()
        dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
        self.driver.find_element(By.XPATH, f"//tr[.//td[normalize-space()='{conn_id}']]")

    def wait_until_in_view(self, element: Any) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        in_view = "const r = arguments[0].getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight;"
        WebDriverWait(self.driver, 5).until(lambda driver: driver.execute_script(in_view, element))

    def press_test(self, conn_id: str) -> tuple[str, str]:
        """Press the row's Test button; return the toast's title and message."""
        By = self.by()
        self.driver.get(f"{self.url}/connections")
        row = f"//tr[.//td[normalize-space()='{conn_id}']]"
        self.driver.find_element(By.XPATH, f"{row}//button[@aria-label='Test Connection']").click()
        toast = self.driver.find_element(By.CSS_SELECTOR, "[data-scope=toast][data-part=root]")
        self.wait_until_in_view(toast)  # the toast slides in: screenshots should show all of it
        title = toast.find_element(By.CSS_SELECTOR, "[data-part=title]").text
        message = toast.find_element(By.CSS_SELECTOR, "[data-part=description]").text
        return title, message


def test_airflow_still_needs_the_port_zero_backport() -> None:
    """Fails once Airflow ships apache/airflow#73298: then drop SERVER_BOOT's backport and the docs' note."""
    from airflow.api_fastapi.core_api.routes.public.connections import _same_endpoint

    assert not _same_endpoint(0, None), "Airflow fixed the port-0 Test button bug: remove the backport"


def test_stripe_connection_form_and_test_button_in_a_real_browser(
    api_server: str, browser: Any, stripe_simulator_factory: Any
) -> None:
    simulator = stripe_simulator_factory()
    page = ConnectionsPage(browser, api_server)
    By = page.by()
    ARTIFACTS.mkdir(exist_ok=True)

    # The form: relabelled, with placeholders, and without the fields a Stripe key does not use.
    dialog = page.open_add_dialog("stripe_ui", "Stripe")
    labels = page.labels(dialog)
    assert "Secret key" in labels and "API base URL (optional)" in labels, labels
    assert not {"Login", "Port", "Schema", "Password", "Host"} & set(labels), labels
    host, password = dialog.find_element(By.NAME, "host"), dialog.find_element(By.NAME, "password")
    assert host.get_attribute("placeholder") == "https://api.stripe.com"
    assert password.get_attribute("placeholder") == "sk_live_… or rk_live_…"
    assert password.get_attribute("type") == "password"
    host.send_keys(simulator.url)
    password.send_keys(simulator.api_key)
    browser.save_screenshot(str(ARTIFACTS / "stripe-connection-form.png"))

    page.open_section(dialog, "Extra Fields")
    extra_labels = page.labels(dialog)
    for label in ("Connected account", "API version", "Max requests per second"):
        assert label in extra_labels, extra_labels
    dialog.find_element(By.NAME, "element_stripe_account").send_keys("acct_1BrowserTest")
    dialog.find_element(By.NAME, "element_max_requests_per_second").send_keys("5")
    browser.save_screenshot(str(ARTIFACTS / "stripe-connection-form-extras.png"))
    page.save(dialog, "stripe_ui")

    # Test: success, with what the key may do and for which account.
    title, message = page.press_test("stripe_ui")
    browser.save_screenshot(str(ARTIFACTS / "stripe-connection-test-success.png"))
    assert title == "Test Connection Successful", (title, message)
    assert message.startswith(
        f"Connected to Stripe at {simulator.url} with a test-mode key for connected account acct_1BrowserTest:"
    ), message
    calls = [r for r in simulator.requests() if r.path == "/v1/reporting/report_types"]
    assert calls and calls[-1].headers.get("Stripe-Account") == "acct_1BrowserTest"

    # The same with a wrong key: the rejection, in words.
    dialog = page.open_add_dialog("stripe_wrong_key", "Stripe")
    dialog.find_element(By.NAME, "host").send_keys(simulator.url)
    dialog.find_element(By.NAME, "password").send_keys("sk_test_notTheSimulatorKey")
    page.save(dialog, "stripe_wrong_key")
    title, message = page.press_test("stripe_wrong_key")
    browser.save_screenshot(str(ARTIFACTS / "stripe-connection-test-rejected.png"))
    assert title == "Test Connection Failed", (title, message)
    assert message.startswith("Stripe rejected the secret key (401): Invalid API Key provided: sk_test_"), message
    assert "notTheSimulatorKey" not in message
