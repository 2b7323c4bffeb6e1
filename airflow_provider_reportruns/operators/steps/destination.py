"""Where a result file goes: destination tokens, the outlet asset, the atomic download."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns.operators.steps.request import permanent
from airflow_provider_reportruns.operators.steps.reuse import INTERVAL_TOKENS

if TYPE_CHECKING:
    from airflow_provider_reportruns._compat import BaseOperator, Context
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

__all__ = [
    "DESTINATION_TOKEN",
    "RUN_TOKENS",
    "asset_uri",
    "check_destination",
    "destination_for",
    "destination_tokens",
    "download_result",
]

# ``{name}`` in a destination; ``{{ … }}`` is Jinja and was rendered before.
DESTINATION_TOKEN = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
RUN_TOKENS = ("report_type", "report_run_id")


def destination_tokens(parameters: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``{name}`` tokens a destination may use for a run with these parameters."""
    names = [*RUN_TOKENS, *(key for key in INTERVAL_TOKENS if isinstance(parameters.get(key), int))]
    names += sorted(key for key in parameters if key not in INTERVAL_TOKENS and key not in names)
    return tuple(names)


def check_destination(destination: str, parameters: Mapping[str, Any]) -> None:
    """Refuse (permanently, before any request) a destination naming a token this run cannot fill."""
    available = destination_tokens(parameters)
    unknown = [name for name in DESTINATION_TOKEN.findall(destination) if name not in available]
    if unknown:
        raise permanent(
            f"The destination {destination!r} names {', '.join('{' + n + '}' for n in dict.fromkeys(unknown))}, "
            f"which this report run cannot fill; available: {', '.join('{' + n + '}' for n in available)}."
        )


def destination_for(destination: str, run: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> str:
    """``destination`` with its tokens replaced: ``{report_type}``, ``{report_run_id}``, any
    parameter of the run (``{payout}``, ``{currency}``, …) and ``{interval_start}`` /
    ``{interval_end}`` as UTC dates (``2024-03-01``).

    :param parameters: the run's parameters, when the run in hand does not carry them.
    """
    from airflow_provider_reportruns.intervals import utc_date

    params = dict(parameters if parameters is not None else run.get("parameters") or {})
    check_destination(destination, params)
    values: dict[str, str] = {"report_type": str(run.get("report_type")), "report_run_id": str(run.get("id"))}
    for key, value in params.items():
        if key in INTERVAL_TOKENS:
            value = utc_date(int(value))
        elif isinstance(value, (list, tuple)):
            value = "-".join(str(item) for item in value)
        values[key] = str(value)
    return DESTINATION_TOKEN.sub(lambda match: values[match.group(1)], destination)


def asset_uri(destination: str) -> str:
    """The fixed part of a (templated) destination as an asset URI: up to the first template or
    token, cut back to the last ``/``; local paths become ``file://`` URIs."""
    fixed = destination.split("{{", 1)[0]
    token = DESTINATION_TOKEN.search(fixed)
    if token is not None:
        fixed = fixed[: token.start()]
    if fixed != destination:
        fixed = fixed.rsplit("/", 1)[0] + "/" if "/" in fixed else fixed
    if "://" not in fixed:
        import os

        fixed = "file://" + os.path.abspath(fixed or ".") + ("/" if fixed.endswith("/") else "")
    return fixed


def download_result(
    operator: BaseOperator,
    hook: StripeReportingHook,
    run: Mapping[str, Any],
    destination: str,
    context: Context,
    parameters: Mapping[str, Any] | None = None,
) -> str:
    """Stream a succeeded run's result file to ``destination`` (path or URI, tokens replaced by
    :func:`destination_for`) and annotate the operator's outlet events."""
    run_id = str(run["id"])
    destination = destination_for(destination, run, parameters)
    size = (run.get("result") or {}).get("size")
    local = _local_path(destination)
    if local is not None:
        import os

        written = os.path.abspath(hook.download_report_run(run, local))
        # Hand back what was asked for: a file:// URI stays a URI, a path becomes absolute.
        result = destination if destination.startswith("file://") else written
    else:
        result = hook.with_fresh_result(run, lambda fresh: _download_to_object_storage(hook, fresh, destination))
    operator.log.info("Downloaded the result file of report run %s (%s bytes) to %s.", run_id, size, result)
    _annotate_outlets(operator, context, {"uri": result, "report_run_id": run_id, "size": size})
    return result


def _download_to_object_storage(hook: StripeReportingHook, run: Mapping[str, Any], destination: str) -> str:
    import uuid

    from airflow_provider_reportruns._compat import object_storage_path

    target = object_storage_path(destination)
    part = target.parent / f".{target.name}.{uuid.uuid4().hex}.part"
    file = run.get("result") or {}
    hook.client.download_atomically(
        file["url"],
        lambda: part.open("wb"),
        lambda: part.rename(target, overwrite=True),
        lambda: part.unlink(missing_ok=True),
        expected_size=file.get("size"),
        what=f"the result file of report run {run['id']}",
    )
    return destination


def _annotate_outlets(operator: BaseOperator, context: Context, extra: dict[str, Any]) -> None:
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    for outlet in operator.outlets or []:
        try:
            outlet_events[outlet].extra.update(extra)
        except Exception:  # an outlet of another kind (or an older Airflow) takes no extra
            operator.log.debug("Could not annotate outlet %r", outlet, exc_info=True)


def _local_path(destination: str) -> str | None:
    """The filesystem path for a plain path or ``file://`` URI; ``None`` for other schemes."""
    if destination.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(destination).path)
    if "://" in destination:
        return None
    return destination
