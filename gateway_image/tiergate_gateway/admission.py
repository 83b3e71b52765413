"""Admission of a call: rate limits, concurrency and a budget reservation, settled when it ends.

``async with Admission(admissions, call) as admission`` either raises the ``GatewayError``
that refuses the call (429, or 503 when the limits store is down) or holds its
request, tokens, concurrency slot and budget reservation until the block is left.
In-process they are held by the local limiter and ledger; through Redis by one lease
(``leases``), taken in one round trip and settled in one, which expires by itself at
the call's deadline plus a margin if its settle never comes (the process died).
Leaving it, however (an answer, an exception, a cancelled task), settles them
with what the call used: ``admission.target`` and ``admission.usage``, set by
whoever saw the answer. A streamed answer takes the admission with it (see
``relay``) and leaves it when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from tiergate_contract import Budget, Route, Target

from .budget import BudgetLedger, nano_cost
from .calls import Call, HedgeLoser
from .config import TierSettings
from .credits import LocalCredits, credits_exhausted, credits_warning
from .durable import DurableSpend
from .errors import GatewayError
from .leases import Grant, RedisLeases
from .limits import LimitDecision, Limiter
from .metrics import Metrics
from .spend import SpendRecorder
from .usage import Usage

__all__ = ["Admission", "Admissions", "call_seconds"]

_log = logging.getLogger("tiergate_gateway")


class Admissions:
    """The limit and budget stores calls are admitted against."""

    def __init__(
        self,
        limiter: Limiter,
        ledger: BudgetLedger,
        metrics: Metrics,
        month: Callable[[], str],
        backend_errors: tuple[type[BaseException], ...] = (),
        shared: RedisLeases | None = None,
        lease_margin_seconds: float = 30.0,
        credits: LocalCredits | None = None,
    ) -> None:
        self.limiter = limiter
        self.ledger = ledger
        self.credits = credits or LocalCredits()
        # Set while the gateway reports its spend to the API: every settled call is recorded.
        self.spend: SpendRecorder | None = None
        # Set with it: the tiers' durable spend, the floors Redis admissions count against.
        self.durable: DurableSpend | None = None
        self.metrics = metrics
        self.month = month
        # What the stores raise when they are unreachable (Redis adds its own).
        self.backend_errors = backend_errors
        # Set: limits and budgets are shared through Redis leases instead of the local stores.
        self.shared = shared
        # A lease outlives its call's own deadline by this much before it is reclaimed.
        self.lease_margin_seconds = lease_margin_seconds

    def backend_down(self, what: str, exc: BaseException) -> GatewayError:
        """Limits and budgets fail closed: no call goes upstream unaccounted."""
        _log.error("the %s backend is unavailable: %s", what, type(exc).__name__)
        return GatewayError(
            503,
            f"the gateway's {what} store (Redis) is unavailable; try again shortly",
            type_="server_error",
            code="limits_unavailable",
            headers=[("retry-after", "1")],
        )


class Admission:
    """One admitted call (an async context manager); see the module docstring."""

    __slots__ = (
        "_admissions",
        "_attempts",
        "_call",
        "_lease",
        "_month",
        "_reserved",
        "_tier",
        "cost_nano",
        "headers",
        "target",
        "target_name",
        "usage",
    )

    def __init__(self, admissions: Admissions, call: Call) -> None:
        self._admissions = admissions
        self._call = call
        self._reserved = 0  # nano-USD
        self._month = ""
        self._lease = ""  # the Redis lease held, if any
        # The tier's settings as plain slots (a pydantic attribute costs ~300 instructions more).
        tier = call.settings
        if tier is None:
            tier = call.settings = TierSettings.of(call.tier)
        self._tier = tier
        # Attempts that may be in flight at once (a hedged call: several): each is reserved for.
        self._attempts = tier.attempts
        # Rate-limit headers and the budget warning, sent with any answer to the call.
        self.headers: list[tuple[str, str]] = []
        self.target: Target | None = None  # the target that served, if one did
        self.target_name = ""  # its name, once settled (a slot: cheaper than ``target.name``)
        self.usage: Usage | None = None  # None: the estimate stands
        self.cost_nano = 0  # what the call cost, once settled (nano-USD)

    async def __aenter__(self) -> Admission:
        admissions, call, tier = self._admissions, self._call, self._tier
        budget = tier.budget
        attempts = self._attempts
        prompt_tokens = call.prompt_tokens * attempts
        tokens_per_minute = tier.tokens_per_minute
        if tokens_per_minute is not None and prompt_tokens > tokens_per_minute:
            admissions.metrics.add(admissions.metrics.rate_limited, tier.name, "tokens")
            raise _never_fits(tier.name, tokens_per_minute, prompt_tokens)
        if admissions.shared is not None:
            return await self._enter_shared(admissions.shared, attempts)
        try:
            decision = await admissions.limiter.acquire(tier.name, tier.limits, prompt_tokens)
        except admissions.backend_errors as exc:
            raise admissions.backend_down("limits", exc) from None
        if not decision.allowed:
            admissions.metrics.add(admissions.metrics.rate_limited, tier.name, decision.limit)
            raise _rate_limited(tier.name, decision)
        self.headers = decision.headers
        credits = tier.credits
        if budget is None and credits is None:
            return self
        credited = False
        try:
            self._month = admissions.month()
            self._reserved = attempts * nano_cost(
                *call.route.max_nano_prices[call.request_class],
                call.prompt_tokens,
                call.max_tokens,
            )
            if credits is not None:
                credit = admissions.credits.reserve(tier.name, credits, self._reserved, self._month)
                if not credit.allowed:
                    admissions.metrics.add(admissions.metrics.credits_rejected, tier.name)
                    raise credits_exhausted(tier.name, credits)
                credited = True
                if credit.warn:
                    self._warn_credits(credit.left_nano)
            if budget is not None:
                try:
                    verdict = await admissions.ledger.reserve(
                        tier.name, budget, self._month, self._reserved
                    )
                except admissions.backend_errors as exc:
                    raise admissions.backend_down("budgets", exc) from None
                if not verdict.allowed:
                    admissions.metrics.add(admissions.metrics.budget_rejected, tier.name)
                    raise _over_budget(tier.name, budget)
                if verdict.warn:
                    self._warn(budget)
        except BaseException:
            # Not admitted after all: give the reservation and the concurrency slot back
            # (``__aexit__`` won't run).
            if credited:
                admissions.credits.settle(tier.name, self._reserved, 0)
            with contextlib.suppress(*admissions.backend_errors):
                await admissions.limiter.release(tier.name, tier.limits)
            raise
        if admissions.spend is not None:
            admissions.spend.reserve(tier.name, self._reserved)
        return self

    async def _enter_shared(self, shared: RedisLeases, attempts: int) -> Admission:
        """Every limit and the budget checked and held under one Redis lease: one round trip."""
        admissions, call, tier = self._admissions, self._call, self._tier
        budget, credits = tier.budget, tier.credits
        month_floor = lifetime_floor = 0
        if budget is not None or credits is not None:
            self._month = admissions.month()
            self._reserved = attempts * nano_cost(
                *call.route.max_nano_prices[call.request_class],
                call.prompt_tokens,
                call.max_tokens,
            )
            if admissions.durable is not None:
                floors = admissions.durable.floors(tier.name, self._month)
                month_floor, lifetime_floor = floors.month, floors.lifetime
        lease_seconds = call_seconds(call.route.route) + admissions.lease_margin_seconds
        try:
            grant = await shared.admit(
                tier.name,
                tier.limits,
                budget,
                self._month or "-",
                call.prompt_tokens * attempts,
                self._reserved,
                lease_seconds,
                credits,
                month_floor,
                lifetime_floor,
            )
        except admissions.backend_errors as exc:
            raise admissions.backend_down("limits", exc) from None
        if not grant.allowed:
            if grant.limit == "budget":
                assert budget is not None
                admissions.metrics.add(admissions.metrics.budget_rejected, tier.name)
                raise _over_budget(tier.name, budget)
            if grant.limit == "credits":
                assert credits is not None
                admissions.metrics.add(admissions.metrics.credits_rejected, tier.name)
                raise credits_exhausted(tier.name, credits)
            admissions.metrics.add(admissions.metrics.rate_limited, tier.name, grant.limit)
            raise _rate_limited(tier.name, _decision(grant))
        self._lease = grant.lease
        self.headers = grant.headers
        if grant.warn and budget is not None:
            self._warn(budget)
        if grant.credits_warn:
            self._warn_credits(grant.credits_left)
        if self._reserved and admissions.spend is not None:
            admissions.spend.reserve(tier.name, self._reserved)
        return self

    def _warn(self, budget: Budget) -> None:
        admissions = self._admissions
        admissions.metrics.add(admissions.metrics.budget_warnings, self._tier.name)
        warning = f"spend is above the soft budget of {budget.soft_usd} USD"
        self.headers.append(("x-tiergate-budget-warning", warning))

    def _warn_credits(self, left_nano: int) -> None:
        admissions = self._admissions
        admissions.metrics.add(admissions.metrics.credits_warnings, self._tier.name)
        self.headers.append(credits_warning(left_nano))

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]:
        # The settle coroutine itself, not a coroutine awaiting it: one frame less per call.
        settle = self._settle()
        if exc_type is asyncio.CancelledError:
            # The task is being torn down and may be cancelled again (a client's EOF, then its
            # close), which would stop the settle halfway; in a task of its own it finishes.
            return asyncio.shield(settle)
        return settle

    async def _settle(self) -> None:
        """Replace the estimate and the reservation with what was used; free the slot."""
        admissions, call, tier = self._admissions, self._call, self._tier
        usage, target = self.usage, self.target
        estimated = call.prompt_tokens
        if usage is not None and usage.reported:
            prompt = usage.prompt_tokens
        else:
            prompt = estimated if target is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        cost = 0
        if target is not None:
            self.target_name = target_name = target.name
            input_nano, output_nano = call.route.nano_prices[target_name]
            # ``nano_cost`` inline (a call less on every settle): nano-USD, rounded up.
            cost = -(-(input_nano * prompt + output_nano * completion) // 1_000_000)
        used = prompt + completion
        # Hedges that lost were sent too: their upstreams bill the prompt they read and what
        # they streamed before the cut.
        losers: list[tuple[HedgeLoser, int]] = []
        if call.hedge_losers:
            losers = [
                (
                    loser,
                    nano_cost(
                        *call.route.nano_prices[loser.target],
                        loser.prompt_tokens,
                        loser.completion_tokens,
                    ),
                )
                for loser in call.hedge_losers
            ]
            for loser, loser_cost in losers:
                cost += loser_cost
                used += loser.prompt_tokens + loser.completion_tokens
        self.cost_nano = cost
        shared = admissions.shared
        reserved_tokens = estimated * self._attempts
        if shared is not None:
            month, back = self._month or "-", reserved_tokens - used
            try:
                await shared.settle(tier.name, tier.limits, month, self._lease, back, cost)
            except admissions.backend_errors as exc:
                # The answer is on its way; the settle is retried (it is idempotent), and the
                # lease frees the slot and the reservation at its deadline meanwhile.
                _log.warning(
                    "settling a call of tier %s failed, retrying: %s", tier.name, type(exc).__name__
                )
                shared.settle_later(tier.name, tier.limits, month, self._lease, back, cost)
        else:
            await admissions.limiter.finish(tier.name, tier.limits, reserved_tokens, used)
            if tier.budget is not None:
                await admissions.ledger.settle(tier.name, self._month, self._reserved, cost)
            if tier.credits is not None:
                admissions.credits.settle(tier.name, self._reserved, cost)
        spend = admissions.spend
        if spend is not None:
            month = self._month or admissions.month()
            spend.settle(tier.name, month, call.key_name, self._reserved, cost, target is not None)
        model = call.route.model
        if target is not None and (usage is None or not usage.reported):
            # Settled on the estimates (the prompt from its size, a token per streamed event).
            admissions.metrics.add(admissions.metrics.usage_missing, tier.name, model)
        key = call.key_name if tier.per_key_metrics else ""
        for loser, loser_cost in losers:
            admissions.metrics.add_usage(
                tier.name,
                model,
                loser.target,
                loser.prompt_tokens,
                loser.completion_tokens,
                loser_cost / 1e9,
                key,
            )
            cost -= loser_cost
        if target is not None and (prompt or completion):
            admissions.metrics.add_usage(
                tier.name, model, self.target_name, prompt, completion, cost / 1e9, key
            )


def call_seconds(route: Route) -> float:
    """The longest a call of ``route`` can run: its request deadline, or without one, every
    attempt's total timeout (a stream's body included)."""
    timeouts = route.timeouts
    attempts = timeouts.total_seconds * route.failover.max_attempts
    if timeouts.request_seconds is None:
        return attempts
    return min(timeouts.request_seconds, attempts)


def _rate_limited(tier: str, decision: LimitDecision) -> GatewayError:
    retry = max(1, int(decision.retry_after + 0.999))
    per = "moment" if decision.limit == "concurrency" else "minute"
    return GatewayError(
        429,
        f"rate limit reached for tier {tier!r}: {decision.limit} per {per}; retry after {retry}s",
        type_="tokens" if decision.limit == "tokens" else "requests",
        code="rate_limit_exceeded",
        headers=[("retry-after", str(retry)), *decision.headers],
    )


def _never_fits(tier: str, limit: int, requested: int) -> GatewayError:
    # As OpenAI words it; x-should-retry: false stops the SDKs from retrying in vain.
    return GatewayError(
        429,
        f"request too large for tier {tier!r}: its tokens per minute limit is {limit}, this "
        f"request needs about {requested} (estimated from its size); send a smaller request",
        type_="tokens",
        code="rate_limit_exceeded",
        headers=[("x-should-retry", "false")],
    )


def _decision(grant: Grant) -> LimitDecision:
    return LimitDecision(False, grant.headers, grant.retry_after, grant.limit)


def _over_budget(tier: str, budget: Budget) -> GatewayError:
    return GatewayError(
        429,
        f"monthly budget of tier {tier!r} is exhausted (hard limit {budget.hard_usd} USD)",
        type_="insufficient_quota",
        code="budget_exceeded",
        headers=[("x-should-retry", "false")],
    )
