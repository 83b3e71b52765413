"""``python -m tiergate_operator``: run the operator (kopf) over all namespaces.

Environment: TIERGATE_STANDALONE=1 runs without kopf peering (one replica);
otherwise replicas coordinate through the ``ClusterKopfPeering`` named by
TIERGATE_PEERING (default ``tiergate``) and only the highest-priority one acts.
TIERGATE_PEERING_PRIORITY sets a replica's priority (default: random, since kopf
freezes replicas of equal priority). TIERGATE_LIVENESS (e.g. ``http://0.0.0.0:8080/healthz``) serves kopf's probe.
TIERGATE_READINESS (e.g. ``http://0.0.0.0:8081/readyz``, on another port) serves the operator's
readiness probe (``tiergate_operator.readiness``); unset, there is none.
Gateway settings: see ``tiergate_operator.settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from typing import Any

import kopf

import tiergate_operator.handlers  # noqa: F401  (registers the handlers)
from tiergate_operator.settings import SettingsError, load_operator_settings, readiness_endpoint


def main() -> None:
    try:
        load_operator_settings()  # refuse bad settings before connecting to anything
        readiness_endpoint()
    except SettingsError as error:
        raise SystemExit(f"tiergate-operator: refusing to start: {error}") from None
    level = os.environ.get("TIERGATE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # A line per watch event costs more CPU than the work itself at scale.
        for chatty in ("kopf.objects",):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    standalone = os.environ.get("TIERGATE_STANDALONE", "") in {"1", "true", "yes"}
    operator = kopf.operator(
        clusterwide=True,
        standalone=standalone,
        peering_name=None if standalone else os.environ.get("TIERGATE_PEERING", "tiergate"),
        priority=int(os.environ.get("TIERGATE_PEERING_PRIORITY") or secrets.randbelow(2**31)),
        liveness_endpoint=os.environ.get("TIERGATE_LIVENESS") or None,
    )
    # kopf.run, with one exception handler more (asyncio.Runner finalizes like asyncio.run).
    with asyncio.Runner() as runner:
        runner.get_loop().set_exception_handler(_quiet_watch_finalization)
        with contextlib.suppress(asyncio.CancelledError):
            runner.run(operator)


def _quiet_watch_finalization(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """At exit, asyncio closes async generators still open; kopf's watch stream sometimes
    refuses to close then ("generator didn't stop after athrow()", after every activity has
    finished). That is logged as one warning line instead of an ERROR with a traceback; every
    other error goes to asyncio's default handler."""
    asyncgen = context.get("asyncgen")
    if getattr(asyncgen, "__qualname__", "") == "infinite_watch" and isinstance(
        context.get("exception"), RuntimeError
    ):
        logging.getLogger("tiergate_operator").warning(
            "a kopf watch stream was still closing at exit: %s", context.get("exception")
        )
        return
    loop.default_exception_handler(context)


if __name__ == "__main__":
    main()
