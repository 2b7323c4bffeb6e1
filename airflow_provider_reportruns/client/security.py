"""Where a Stripe key may be sent, and how it shows in messages."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_API_BASE",
    "STRIPE_API_HOST",
    "STRIPE_FILES_HOST",
    "file_url_refusal",
    "is_loopback",
    "mask_key",
    "origin",
    "validate_api_base",
    "validate_secret_key",
]

DEFAULT_API_BASE = "https://api.stripe.com"
STRIPE_API_HOST = "api.stripe.com"
STRIPE_FILES_HOST = "files.stripe.com"


def mask_key(key: str) -> str:
    """``sk_test_…abcd``: enough to tell keys apart in a message, never enough to use one."""
    prefix = key.split("_", 2)
    head = "_".join(prefix[:2]) + "_" if len(prefix) == 3 else ""
    return f"{head}…{key[-4:]}" if len(key) > 8 else "…"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, brackets allowed) never leaves this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: what a message may show of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def validate_api_base(api_base: str) -> str:
    """Check an API base URL and return it without a trailing slash.

    ``https://`` anywhere; plain ``http://`` only to a loopback host (the local simulator), so a
    secret key never crosses a network in clear text.
    """
    parts = urlsplit(api_base)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            f"The Stripe API base URL {api_base!r} is not a URL with a scheme and host; "
            f"use {DEFAULT_API_BASE} (or leave the host empty) or http://127.0.0.1:PORT for the simulator."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"Refusing plain http:// to {parts.hostname}: a Stripe key is only sent over https, "
            "or over http to a loopback host (127.0.0.1, ::1, localhost) such as the local simulator."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"The Stripe API base URL {api_base!r} must not carry a query, fragment or user info.")
    return api_base.rstrip("/")


def validate_secret_key(api_key: str | None, *, source: str = "the client") -> str:
    """Reject an empty or publishable key before any request is made."""
    key = (api_key or "").strip()
    if not key:
        raise ValueError(
            f"No Stripe secret key in {source}: put an sk_… or rk_… key in the Secret key (password) field."
        )
    if key.startswith("pk_"):
        raise ValueError(
            f"The Stripe key in {source} is a publishable key (pk_…), which cannot call the Reporting API; "
            "use a secret key (sk_…) or a restricted key (rk_…) with the report_runs_and_report_types_read "
            "permission."
        )
    return key


def file_url_refusal(url: str, api_base: str) -> str | None:
    """Why the key must not be sent to ``url`` for a result file, or ``None`` when it may.

    Stripe serves result files from ``https://files.stripe.com``; a local API base (the
    simulator) serves them itself. Any other host gets no request at all.
    """
    parts = urlsplit(url)
    api = urlsplit(api_base)
    same_as_api = (parts.scheme, parts.hostname, parts.port) == (api.scheme, api.hostname, api.port)
    stripe_files = parts.scheme == "https" and parts.hostname == STRIPE_FILES_HOST and parts.port in (None, 443)
    if same_as_api or stripe_files:
        return None
    return (
        f"Refusing to download a result file from {parts.scheme}://{parts.netloc}: the Stripe key is "
        f"only sent to {api.scheme}://{api.netloc} and https://{STRIPE_FILES_HOST}."
    )
