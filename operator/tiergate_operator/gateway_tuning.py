"""Gateway tuning the platform team sets once (chart ``gateway.tuning``), checked early.

The chart passes ``gateway.tuning`` to the operator as JSON in ``TIERGATE_GATEWAY_TUNING``
(camelCase keys, e.g. ``{"maxBodyBytes": 8388608, "accessLogSample": 0.1}``); the operator
renders each as the gateway's own variable (``TIERGATE_GATEWAY_MAX_BODY_BYTES``) in every
gateway Deployment. An unknown key or a value of the wrong kind stops the operator at start
with a message naming it, instead of gateways that crash-loop later. The gateway checks
ranges itself; a test keeps this table equal to the gateway's flags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

__all__ = ["GATEWAY_TUNING", "TuningError", "chart_key", "parse_tuning", "tuned"]


class TuningError(ValueError):
    """``TIERGATE_GATEWAY_TUNING`` holds something the gateways would refuse."""


def _whole(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TuningError("a whole number of at least 0")
    return str(value)


def _number(value: object) -> str:
    if isinstance(value, str):  # helm --set passes decimals as strings
        try:
            value = float(value)
        except ValueError:
            raise TuningError("a number of at least 0") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise TuningError("a number of at least 0")
    return str(value)


def _buckets(value: object) -> str:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not value:
        raise TuningError("a list of seconds, e.g. [0.1, 0.5, 1]")
    try:
        bounds = [float(part) for part in value]
    except (TypeError, ValueError):
        raise TuningError("a list of seconds, e.g. [0.1, 0.5, 1]") from None
    return ",".join(repr(bound) for bound in bounds)


def _log_format(value: object) -> str:
    if value not in ("json", "text"):
        raise TuningError('"json" or "text"')
    return str(value)


# The gateway's tuning settings (its flags, without dashes): name -> how a value is checked.
GATEWAY_TUNING: dict[str, Callable[[object], str]] = {
    "max_line_bytes": _whole,
    "max_header_bytes": _whole,
    "max_headers": _whole,
    "max_body_bytes": _whole,
    "header_timeout_seconds": _number,
    "body_timeout_seconds": _number,
    "idle_seconds": _number,
    "max_connections": _whole,
    "max_response_bytes": _whole,
    "max_json_depth": _whole,
    "access_log_sample": _number,
    "ttft_buckets": _buckets,
    "overhead_buckets": _buckets,
    "log_format": _log_format,
    "redis_max_connections": _whole,
    "redis_timeout_seconds": _number,
    "lease_margin_seconds": _number,
    "spend_report_seconds": _number,
    "spend_heartbeat_seconds": _number,
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def chart_key(name: str) -> str:
    """The chart value of a gateway setting: ``spend_report_seconds`` ->
    ``gateway.tuning.spendReportSeconds``."""
    return f"gateway.tuning.{_camel(name)}"


def tuned(tuning: Sequence[tuple[str, str]], name: str) -> str | None:
    """The value ``parse_tuning`` gave the gateway setting ``name``, or None: unset (the
    gateway keeps its default)."""
    variable = f"TIERGATE_GATEWAY_{name.upper()}"
    return next((value for key, value in tuning if key == variable), None)


def parse_tuning(text: str | None) -> tuple[tuple[str, str], ...]:
    """``TIERGATE_GATEWAY_TUNING`` -> the gateway's variables and values, sorted by name."""
    if not text or not text.strip():
        return ()
    try:
        tuning = json.loads(text)
    except ValueError as exc:
        raise TuningError(f"TIERGATE_GATEWAY_TUNING is not JSON: {exc}") from None
    if not isinstance(tuning, dict):
        raise TuningError("TIERGATE_GATEWAY_TUNING must be a JSON object (gateway.tuning)")
    variables = []
    for key, value in tuning.items():
        name = _snake(str(key))
        check = GATEWAY_TUNING.get(name)
        if check is None:
            known = ", ".join(sorted(_camel(n) for n in GATEWAY_TUNING))
            raise TuningError(f"gateway.tuning.{key} is not a gateway setting; known: {known}")
        try:
            variables.append((f"TIERGATE_GATEWAY_{name.upper()}", check(value)))
        except TuningError as exc:
            raise TuningError(f"gateway.tuning.{key}={value!r} must be {exc}") from None
    return tuple(sorted(variables))
