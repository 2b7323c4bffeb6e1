"""The rules of a request: authentication, dispatch, and report run creation with idempotency.

Reads (retrieve, list, report types, files) are in :mod:`.reads`; this module decides whether a
create is valid, executes it once per idempotency key and replays the stored answer after that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from airflow_provider_reportruns.testing.simulator import reads
from airflow_provider_reportruns.testing.simulator.catalogue import (
    INT_PARAMETERS,
    PARAMETER_NAMES,
    REPORT_TYPES,
    ReportTypeSpec,
    unknown_columns,
)
from airflow_provider_reportruns.testing.simulator.content import b62, utc
from airflow_provider_reportruns.testing.simulator.errors import (
    ApiError,
    Response,
    error_response,
    fault_response,
    json_response,
    mask_key,
    mask_restricted,
)
from airflow_provider_reportruns.testing.simulator.faults import Fault
from airflow_provider_reportruns.testing.simulator.forms import FormError, decode_form
from airflow_provider_reportruns.testing.simulator.state import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    REQUIRED_PERMISSION,
    Context,
    IdempotencyEntry,
    Run,
    SimulatorState,
)

__all__ = ["authenticate", "check_columns", "check_create_shape", "create", "execute_create", "handle"]


def authenticate(state: SimulatorState, ctx: Context) -> None:
    """Accept the simulator's key or a permitted restricted key, and note the mode it implies.

    :raises ApiError: 401 for a missing, publishable or unknown key; 403 for a restricted key
        without the report runs permission.
    """
    header = ctx.headers.get("Authorization", "").strip()
    if not header:
        raise ApiError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
            "https://stripe.com/docs/api#authentication for details, or we can help at "
            "https://support.stripe.com/.",
        )
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    key = credential
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = header
    if key.startswith("pk_") and key != state.api_key:
        raise ApiError(
            401,
            "This API call cannot be made with a publishable API key. Please use a secret API key. "
            "You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys.",
        )
    if key == state.api_key:
        allowed = True
    elif key in state.restricted_keys:
        allowed = bool(state.restricted_keys[key])
    else:
        raise ApiError(401, f"Invalid API Key provided: {mask_key(key)}")
    ctx.livemode = key.startswith(("sk_live_", "rk_live_"))
    if not allowed:
        raise ApiError(
            403,
            f"The provided key '{mask_restricted(key)}' does not have the required permissions for "
            f"this endpoint on account '{ctx.account or state.account_id}'. Having the "
            f"'{REQUIRED_PERMISSION}' permission would allow this request to continue.",
        )


def handle(state: SimulatorState, ctx: Context, fault: Fault | None) -> Response:
    """Answer one request (faults that replace the response were applied by the caller)."""
    if ctx.kind == "unknown":
        raise ApiError(
            404,
            f"Unrecognized request URL ({ctx.method}: {ctx.path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )
    authenticate(state, ctx)
    if ctx.kind == "create":
        return create(state, ctx, fault)
    if fault is not None and fault.fault == "slow":
        state.stopping.wait(fault.delay)
    if ctx.kind == "file_contents":
        return reads.file_contents(state, ctx)
    query = reads.decode_query(ctx)
    if ctx.kind == "list":
        return json_response(200, reads.list_runs(state, ctx, query))
    reads.only_expand(query)
    if ctx.kind == "retrieve":
        return json_response(200, reads.retrieve(state, ctx))
    if ctx.kind == "report_types":
        return json_response(200, reads.report_types(state, ctx))
    if ctx.kind == "report_type":
        return json_response(200, reads.report_type(state, ctx, ctx.args["id"]))
    if ctx.kind == "file":
        run = reads.file_run(state, ctx)
        _, succeeded, _ = state.run_state(run, state.clock())
        assert succeeded is not None
        return json_response(200, state.render_file(run, succeeded))
    raise AssertionError(ctx.kind)


def create(state: SimulatorState, ctx: Context, fault: Fault | None) -> Response:
    """``POST /v1/reporting/report_runs``: validate, execute once per idempotency key, replay after."""
    key = ctx.headers.get("Idempotency-Key")
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ApiError(
            400,
            f"Invalid Idempotency-Key: keys may be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters "
            f"long, but the one provided has {len(key)}.",
            param="Idempotency-Key",
        )
    try:
        form: Any = decode_form(ctx.form_pairs)
        form_error: FormError | None = None
    except FormError as exc:
        form, form_error = sorted(ctx.form_pairs), exc
    fingerprint = json.dumps(form, sort_keys=True)
    slot: tuple[bool, str | None, str] | None = None
    if key is not None:
        slot = (ctx.livemode, ctx.account, key)
        with state.lock:
            entry = state.idempotency.get(slot)
            if entry is None:
                state.idempotency[slot] = IdempotencyEntry(fingerprint)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise ApiError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than '{key}' if you meant to execute a "
                    "different request.",
                    type="idempotency_error",
                )
            if not entry.done or entry.response is None:
                raise ApiError(
                    409,
                    "There is currently another in-progress request using this Idempotent Key (that "
                    "probably means you submitted twice, and the other request is still going "
                    f"through): {key}. Please try again later.",
                    type="idempotency_error",
                    code="idempotency_key_in_use",
                )
            ctx.replayed = True
            ctx.run_id = entry.run_id
            stored = entry.response
            headers = [h for h in stored.headers if h[0] not in ("Request-Id", "Original-Request")]
            headers += [("Idempotent-Replayed", "true"), ("Original-Request", entry.request_id)]
            return Response(stored.status, headers, stored.body)
    try:
        # Parameter validation happens before the endpoint executes, so Stripe stores nothing.
        if form_error is not None:
            raise ApiError(400, form_error.message, param=form_error.param)
        report_type, parameters = check_create_shape(form)
    except ApiError:
        if slot is not None:
            with state.lock:
                state.idempotency.pop(slot, None)
        raise
    if fault is not None and fault.fault == "slow":
        state.stopping.wait(fault.delay)
    try:
        if fault is not None and fault.stored and fault.fault in ("500", "502", "503", "500_should_retry_false"):
            response = fault_response(fault.fault, ctx.request_id)
        else:
            run = execute_create(state, ctx, report_type, parameters)
            response = json_response(200, state.render_run(run, run.created, creating=True))
    except ApiError as exc:
        response = error_response(exc, ctx.request_id)
    except BaseException:
        if slot is not None:
            with state.lock:
                state.idempotency.pop(slot, None)
        raise
    if key is not None:
        response.headers.append(("Idempotency-Key", key))
    if slot is not None:
        with state.lock:
            entry = state.idempotency[slot]
            entry.done, entry.response, entry.request_id, entry.run_id = (
                True,
                response,
                ctx.request_id,
                ctx.run_id,
            )
    return response


def check_create_shape(form: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The report type and typed parameters of a create form, or Stripe's 400 for its shape."""
    for name in form:
        if name not in ("report_type", "parameters", "expand"):
            raise ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    raw = form.get("parameters", {})
    if not isinstance(raw, dict):
        raise ApiError(400, "Invalid object", code="parameter_invalid_object", param="parameters")
    for name in raw:
        if name not in PARAMETER_NAMES:
            param = f"parameters[{name}]"
            raise ApiError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)
    expand = form.get("expand", [])
    if not isinstance(expand, list) or not all(isinstance(x, str) for x in expand):
        raise ApiError(400, "Invalid array", code="parameter_invalid_array", param="expand")
    parameters: dict[str, Any] = {}
    for name, value in raw.items():
        param = f"parameters[{name}]"
        if name == "columns":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ApiError(400, "Invalid array", code="parameter_invalid_array", param=param)
            parameters[name] = list(value)
        elif not isinstance(value, str):
            raise ApiError(400, "Invalid string", code="parameter_invalid_string", param=param)
        elif name in INT_PARAMETERS:
            if not re.fullmatch(r"-?\d+", value.strip()):
                raise ApiError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)
            parameters[name] = int(value)
        else:
            parameters[name] = value
    report_type = form.get("report_type")
    if report_type is None or report_type == "":
        raise ApiError(400, "Missing required param: report_type.", code="parameter_missing", param="report_type")
    if not isinstance(report_type, str):
        raise ApiError(400, "Invalid string", code="parameter_invalid_string", param="report_type")
    return report_type, parameters


def execute_create(state: SimulatorState, ctx: Context, report_type: str, parameters: dict[str, Any]) -> Run:
    """Check the parameters against the report type and its data, then store a new pending run."""
    spec = REPORT_TYPES.get(report_type)
    if spec is None:
        raise ApiError(
            400,
            f"Invalid report_type: `{report_type}` is not a valid report type. See "
            "https://stripe.com/docs/reporting/statements/api#report-types for the available types.",
            param="report_type",
        )
    state.check_live_only(ctx, report_type)
    for name in sorted(parameters):
        if not spec.accepts(name):
            param = f"parameters[{name}]"
            raise ApiError(
                400,
                f"The report type {report_type} does not accept the parameter `{name}`.",
                code="parameter_unknown",
                param=param,
            )
    check_columns(spec, parameters.get("columns"))
    for name in sorted(spec.required):
        if name not in parameters:
            raise ApiError(
                400,
                f"Missing required param: parameters[{name}].",
                code="parameter_missing",
                param=f"parameters[{name}]",
            )
    start, end = parameters.get("interval_start"), parameters.get("interval_end")
    if start is not None and end is not None and start >= end:
        raise ApiError(
            400,
            f"`interval_start` ({utc(start)} UTC) must be before `interval_end` ({utc(end)} UTC).",
            param="parameters[interval_start]",
        )
    with state.lock:
        avail_start, avail_end = state.data_available_start, state.data_end_for(report_type)
    for name, value in (("interval_start", start), ("interval_end", end)):
        if value is None:
            continue
        if value < avail_start:
            raise ApiError(
                400,
                f"Data for the report type {report_type} is only available starting from "
                f"{utc(avail_start)} UTC; you requested `{name}` = {utc(value)} UTC.",
                param=f"parameters[{name}]",
            )
        if value > avail_end:
            raise ApiError(
                400,
                f"Data for the report type {report_type} is only available through "
                f"{utc(avail_end)} UTC; you requested `{name}` = {utc(value)} UTC.",
                param=f"parameters[{name}]",
            )
    now = state.clock()
    with state.lock:
        seq = state.run_seq
        state.run_seq += 1
        delay = state.run_delay(report_type, dict(parameters), seq) if callable(state.run_delay) else state.run_delay
        digest = hashlib.blake2b(f"{state.seed}:run:{seq}".encode(), digest_size=64).digest()
        run = Run(
            id="frr_" + b62(digest[:32], 24),
            seq=seq,
            account=ctx.account,
            livemode=ctx.livemode,
            created=now,
            report_type=report_type,
            parameters=parameters,
            delay=max(0.0, float(delay)),
            fails=report_type in state.fail_report_types,
            file_id="file_" + b62(digest[32:], 24),
        )
        state.runs[run.id] = run
        state.files[run.file_id] = run.id
    ctx.run_id = run.id
    return run


def check_columns(spec: ReportTypeSpec, columns: list[str] | None) -> None:
    """Refuse columns the report type does not have, as Stripe does, naming the first one.

    :param spec: the report type.
    :param columns: the requested ``columns``, or ``None`` for the defaults.
    :raises ApiError: 400 ``parameter_unknown`` on ``parameters[columns]``.
    """
    bad = unknown_columns(spec, columns or ())
    if not bad:
        return
    column, suggestion = bad[0]
    hint = f" Did you mean `{suggestion}`?" if suggestion else ""
    others = f" ({len(bad) - 1} more unknown column{'s' if len(bad) > 2 else ''} after it.)" if len(bad) > 1 else ""
    raise ApiError(
        400,
        f"Invalid column `{column}` for the report type {spec.id}.{hint}{others} The columns it supports are "
        "listed at https://stripe.com/docs/reports/report-types.",
        code="parameter_unknown",
        param="parameters[columns]",
    )
