"""Benchmark: routing strategies under skewed upstreams (issue 13).

Not a test: a script that prints a Markdown table. Runs on 127.0.0.1 only.

    .venv/bin/python bench/routing/run.py [--calls 1000] [--rate 40] [--hedge-after-ms 300]
        [--hedge-max-extra 1] [--gateway-python PATH] [--nice -10]

- two streambench mocks (bench/streams) on core 1: "spiky", cheap, time to first token
  log-normal with p50 200 ms / p99 2 s; "steady", four times the price, p50 300 ms / p99 400 ms.
  Each answers with 20 tokens, one every 20 ms after the first, and counts what a provider
  would bill: every request's prompt (its body's bytes / 4) and the completion tokens it
  actually sent.
- one route with both targets (weights 50/50, same priority); one tier whose routing block
  (``routing_block``) selects the strategy: Weighted, CostFirst, LatencyFirst, LatencyFirst with
  a hedge. A strategy the contract (or the gateway) refuses is skipped with a note.
- the streambench load generator (core 1) opens ``--calls`` streamed calls at ``--rate`` per
  second (open loop): straight to each mock first (the best single target's figures in the same
  run), then through a fresh tiergate worker (core 0) per strategy.
- cost per 1,000 calls from the mocks' bills (hedged attempts included) and from the gateway's
  own ``tiergate_gateway_cost_usd`` counter.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streams"))
import harness

sys.path[:0] = harness.GATEWAY_PATH

from pydantic import ValidationError  # noqa: E402

from tiergate_contract import (  # noqa: E402
    Pricing,
    Route,
    Target,
    Tier,
    Timeouts,
    canonical_json,
    hash_client_key,
    seal,
)

# The user message's size: about 500 tokens at 4 bytes a token, which is how the gateway
# estimates a prompt (what it charges a losing hedge, from the body it was sent) and how the mocks bill it.
PROMPT_BYTES = 2000
COMPLETION_TOKENS = 20
TOKEN_INTERVAL_MS = 20
GOAL_HEDGE_P99_FACTOR = 1.2  # LatencyFirst + hedge: p99 within 1.2x the best single target's
GOAL_COST_FACTOR = 1.01  # CostFirst: within 1% of the cheapest possible cost


@dataclass(frozen=True)
class Upstream:
    name: str
    ttft_p50_ms: float
    ttft_p99_ms: float
    pricing: Pricing

    def call_cost(self, prompt_tokens: Decimal) -> Decimal:
        """USD for one call answered whole by this upstream."""
        return (
            prompt_tokens * self.pricing.input_per_million
            + COMPLETION_TOKENS * self.pricing.output_per_million
        ) / 1_000_000


UPSTREAMS = (
    Upstream(
        "spiky",
        200,
        2000,
        Pricing(input_per_million=Decimal("0.27"), output_per_million=Decimal("1.10")),
    ),
    Upstream(
        "steady",
        300,
        400,
        Pricing(input_per_million=Decimal("1.08"), output_per_million=Decimal("4.40")),
    ),
)


@dataclass(frozen=True)
class Hedge:
    after_ms: int
    max_extra: int


@dataclass(frozen=True)
class Strategy:
    label: str
    name: str  # Weighted | CostFirst | LatencyFirst
    hedge: Hedge | None = None


def routing_block(strategy: Strategy) -> dict[str, Any] | None:
    """The tier's routing block in the gateway config contract; None: today's default
    (Weighted without a hedge), which needs no block."""
    if strategy.name == "Weighted" and strategy.hedge is None:
        return None
    block: dict[str, Any] = {"strategy": strategy.name}
    if strategy.hedge is not None:
        block["hedge"] = {
            "after_ms": strategy.hedge.after_ms,
            "max_extra": strategy.hedge.max_extra,
        }
    return block


def gateway_config(path: Path, mocks: dict[str, harness.Process], strategy: Strategy) -> None:
    """Write the config; raises ValidationError when the contract refuses the strategy."""
    route = Route(
        model="bench",
        targets=tuple(
            Target(
                name=upstream.name,
                base_url=f"{mocks[upstream.name].url}/v1",
                upstream_model=f"{upstream.name}-model",
                weight=50,
                priority=0,
                pricing=upstream.pricing,
            )
            for upstream in UPSTREAMS
        ),
        timeouts=Timeouts(connect_seconds=10, first_byte_seconds=30, total_seconds=60),
    )
    tier: dict[str, Any] = Tier(
        name="bench", key_sha256=(hash_client_key(harness.KEY),), models=("bench",)
    ).model_dump(mode="json")
    block = routing_block(strategy)
    if block is not None:
        tier["routing"] = block
    config = seal(
        gateway="bench", namespace="bench", routes=[route], tiers=[Tier.model_validate(tier)]
    )
    path.write_bytes(canonical_json(config))


@dataclass
class Result:
    label: str
    report: dict[str, Any]
    bills: dict[str, dict[str, int]]  # per upstream: what it served during the run
    gateway_cost: Decimal | None

    @property
    def calls_ok(self) -> int:
        return int(self.report["ok"])

    def prompt_per_request(self) -> Decimal:
        requests = sum(bill.get("requests", 0) for bill in self.bills.values())
        prompt = sum(bill.get("prompt_tokens", 0) for bill in self.bills.values())
        return Decimal(prompt) / requests if requests else Decimal(0)

    def cheapest(self) -> Decimal:
        """The cheapest possible cost of this run's calls: each once, on the cheapest target."""
        prompt = self.prompt_per_request()
        return self.calls_ok * min(upstream.call_cost(prompt) for upstream in UPSTREAMS)

    def billed(self) -> Decimal:
        total = Decimal(0)
        for upstream in UPSTREAMS:
            bill = self.bills.get(upstream.name, {})
            total += (
                bill.get("prompt_tokens", 0) * upstream.pricing.input_per_million
                + bill.get("completion_tokens", 0) * upstream.pricing.output_per_million
            ) / 1_000_000
        return total


def mock_stats(mocks: dict[str, harness.Process]) -> dict[str, dict[str, int]]:
    return {name: harness.get_json(mock.url + "/stats") for name, mock in mocks.items()}


def delta(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        name: {key: value - before[name].get(key, 0) for key, value in stats.items()}
        for name, stats in after.items()
    }


_COST_LINE = re.compile(r"^tiergate_gateway_cost_usd_total\{[^}]*\} ([0-9.eE+-]+)$", re.M)


def gateway_cost(url: str) -> Decimal:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum((Decimal(value) for value in _COST_LINE.findall(text)), Decimal(0))


def run_calls(binary: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    report, _ = harness.run_load(
        binary,
        url + "/v1/chat/completions",
        streams=args.calls,
        ramp_seconds=args.calls / args.rate,
        timeout_seconds=60,
        prompt_bytes=PROMPT_BYTES,
    )
    return report


def per_thousand(total: Decimal, calls: int) -> str:
    return "-" if calls == 0 else f"{total * 1000 / calls:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="streamed calls per run")
    parser.add_argument("--rate", type=float, default=40.0, help="calls started per second")
    parser.add_argument("--hedge-after-ms", type=int, default=300)
    parser.add_argument("--hedge-max-extra", type=int, default=1)
    parser.add_argument(
        "--gateway-python",
        type=Path,
        default=harness.python_default(),
        help="tiergate's interpreter",
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of every process started (see bench/streams)"
    )
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is required (apt-get install -y util-linux)")
    harness.NICE = args.nice
    harness.raise_file_limit()
    binary = harness.build_streambench()
    strategies = (
        Strategy("Weighted (50/50)", "Weighted"),
        Strategy("CostFirst", "CostFirst"),
        Strategy("LatencyFirst", "LatencyFirst"),
        Strategy(
            f"LatencyFirst + hedge after {args.hedge_after_ms} ms",
            "LatencyFirst",
            Hedge(args.hedge_after_ms, args.hedge_max_extra),
        ),
    )
    load_before = harness.load_average()
    folder = Path(tempfile.mkdtemp(prefix="tiergate-routing-"))
    notes: list[str] = []
    results: list[Result] = []
    mocks: dict[str, harness.Process] = {}
    try:
        for seed, upstream in enumerate(UPSTREAMS, start=1):
            mocks[upstream.name] = harness.start_mock(
                binary,
                chunks=COMPLETION_TOKENS,
                interval_ms=TOKEN_INTERVAL_MS,
                ttft_p50_ms=upstream.ttft_p50_ms,
                ttft_p99_ms=upstream.ttft_p99_ms,
                prompt_tokens=0,  # bill the body's bytes / 4
                seed=seed,
                name=upstream.name,
            )
        for upstream in UPSTREAMS:
            print(f"direct to {upstream.name} ...", file=sys.stderr)
            before = mock_stats(mocks)
            report = run_calls(binary, mocks[upstream.name].url, args)
            results.append(
                Result(
                    f"direct: {upstream.name} only", report, delta(mock_stats(mocks), before), None
                )
            )
        for index, strategy in enumerate(strategies):
            print(f"{strategy.label} ...", file=sys.stderr)
            config = folder / f"tiergate-{index}.json"
            try:
                gateway_config(config, mocks, strategy)
            except ValidationError as exc:
                first = exc.errors()[0]
                notes.append(
                    f"{strategy.label}: skipped, the config contract refuses its routing block "
                    f"{routing_block(strategy)} ({'.'.join(map(str, first['loc']))}: {first['msg']})"
                )
                continue
            log = folder / f"tiergate-{index}.log"
            try:
                gateway = harness.start_gateway(
                    args.gateway_python, config, max_connections=4096, log=log, ready_within=15
                )
            except RuntimeError as exc:
                notes.append(f"{strategy.label}: skipped, the gateway refused the config ({exc})")
                continue
            try:
                before = mock_stats(mocks)
                report = run_calls(binary, gateway.url, args)
                time.sleep(1.5)  # the gateway flushes its counters every second
                results.append(
                    Result(
                        strategy.label,
                        report,
                        delta(mock_stats(mocks), before),
                        gateway_cost(gateway.url),
                    )
                )
            finally:
                gateway.stop()
    finally:
        for mock in mocks.values():
            mock.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print()
    print_table(results)
    print()
    print(
        f"{args.calls:,} streamed calls per run at {args.rate:g}/s (open loop); a {PROMPT_BYTES:,}-byte "
        f"prompt (billed as bytes / 4) and {COMPLETION_TOKENS} completion tokens a call; spiky: TTFT p50 200 / p99 2,000 ms, "
        f"${UPSTREAMS[0].pricing.input_per_million}/${UPSTREAMS[0].pricing.output_per_million} per M "
        f"in/out; steady: p50 300 / p99 400 ms, ${UPSTREAMS[1].pricing.input_per_million}/"
        f"${UPSTREAMS[1].pricing.output_per_million}; tiergate: one "
        f"worker on core {harness.SERVER_CORE}, mocks and load generator on core {harness.LOAD_CORE}; "
        f"niceness {args.nice}; load average before: {load_before:.2f}, after: "
        f"{harness.load_average():.2f} (2 cores, shared)"
    )
    for line in goal_lines(results):
        print(f"goal: {line}")
    for note in notes:
        print(f"note: {note}")


def print_table(results: list[Result]) -> None:
    print(
        "| strategy | calls ok | errors | TTFT p50 (ms) | TTFT p99 (ms) | calls to spiky / steady "
        "| attempts per call | cost per 1,000 calls, upstream bill (USD) "
        "| cost per 1,000 calls, gateway's count (USD) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        report = result.report
        requests = {name: bill.get("requests", 0) for name, bill in result.bills.items()}
        ok = result.calls_ok
        errors = sum(report["errors"].values())
        error_text = (
            "0"
            if not errors
            else f"{errors} ({', '.join(f'{k} {v}' for k, v in sorted(report['errors'].items()))})"
        )
        attempts = sum(requests.values()) / report["streams"]
        counted = "-" if result.gateway_cost is None else per_thousand(result.gateway_cost, ok)
        print(
            f"| {result.label} | {ok:,} | {error_text} | {report['ttfc_ms']['p50']:.0f} "
            f"| {report['ttfc_ms']['p99']:.0f} | {requests.get('spiky', 0):,} / {requests.get('steady', 0):,} "
            f"| {attempts:.2f} | {per_thousand(result.billed(), ok)} | {counted} |"
        )


def goal_lines(results: list[Result]) -> list[str]:
    direct = [r for r in results if r.label.startswith("direct:")]
    lines = []
    if direct:
        best = min(direct, key=lambda r: r.report["ttfc_ms"]["p99"])
        limit = best.report["ttfc_ms"]["p99"] * GOAL_HEDGE_P99_FACTOR
        for result in results:
            if "hedge" in result.label:
                p99 = result.report["ttfc_ms"]["p99"]
                verdict = "met" if p99 <= limit else f"MISSED by {p99 - limit:.0f} ms"
                lines.append(
                    f"{result.label}: TTFT p99 {p99:.0f} ms against {GOAL_HEDGE_P99_FACTOR}x the best "
                    f"single target's ({best.label}, {best.report['ttfc_ms']['p99']:.0f} ms) = "
                    f"{limit:.0f} ms: {verdict}"
                )
    for result in results:
        if result.label == "CostFirst" and result.calls_ok:
            cost = result.billed() * 1000 / result.calls_ok
            floor = result.cheapest() * 1000 / result.calls_ok
            limit = floor * Decimal(str(GOAL_COST_FACTOR))
            verdict = "met" if cost <= limit else f"MISSED by {(cost / floor - 1) * 100:.1f}%"
            lines.append(
                f"CostFirst: ${cost:.4f} per 1,000 calls against the cheapest possible for the "
                f"same calls, each once on the cheapest target, ${floor:.4f} (+1% = ${limit:.4f}): "
                f"{verdict}"
            )
    return lines


if __name__ == "__main__":
    main()
