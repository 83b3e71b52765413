"""Benchmark: long SSE streams, the real LLM load shape, through tiergate and straight to the mock.

Not a test: a script that prints a Markdown table. Runs on 127.0.0.1 only.

    .venv/bin/python bench/streams/run.py [--scenario STREAMS:INTERVAL_MS:DURATION_S:RAMP_S ...]
        [--gateway-python PATH] [--litellm BIN_DIR] [--litellm-streams 1000,300,100] [--json PATH]

- streambench (Go, bench/streams/*.go, built by build.sh into ~/.cache/tiergate-bench): the
  mock upstream sends a content event every INTERVAL_MS for DURATION_S, then usage and [DONE];
  the load generator starts STREAMS streams evenly over RAMP_S, one connection each, and times
  every content event. Both run on core 1 (GOMAXPROCS=1), the server under test on core 0.
- each scenario runs straight to the mock first (tiergate paused with SIGSTOP), then through
  one tiergate worker (a fresh process per scenario): the direct figures show what the mock and
  the load generator themselves add, the difference is tiergate's.
- tiergate's config: a two-target 80/20 route to the mock with generous timeouts, one tier
  without limits or budget.
- LiteLLM's proxy (one worker, from its venv outside the repo) if ``--litellm`` exists: at the
  first of ``--litellm-streams`` (same shape, fewer streams) it serves without errors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

sys.path[:0] = harness.GATEWAY_PATH

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

DEFAULT_SCENARIOS = ("1000:100:30:5", "3000:100:30:5", "10000:1000:30:10")
# Goals of issue 13, per worker: added gap p99, added time-to-first-chunk p99, RSS, errors.
GOAL_ADDED_GAP_MS = 10.0
GOAL_ADDED_TTFC_MS = 50.0
GOAL_RSS_MB = 300.0
FDS_PER_STREAM = 2  # the client's connection and the upstream one
FDS_SPARE = 32  # listening socket, epoll, logs, config watch, ...


@dataclass(frozen=True)
class Scenario:
    streams: int
    interval_ms: float
    duration_s: float
    ramp_s: float

    @classmethod
    def parse(cls, text: str) -> Scenario:
        try:
            streams, interval, duration, ramp = text.split(":")
            scenario = cls(int(streams), float(interval), float(duration), float(ramp))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"scenario {text!r} is not STREAMS:INTERVAL_MS:DURATION_S:RAMP_S"
            ) from None
        if scenario.streams < 1 or scenario.interval_ms <= 0 or scenario.chunks < 2:
            raise argparse.ArgumentTypeError(
                f"scenario {text!r}: at least 1 stream and 2 chunks (DURATION_S / INTERVAL_MS)"
            )
        return scenario

    @property
    def chunks(self) -> int:
        return round(self.duration_s * 1000 / self.interval_ms)

    def scaled(self, streams: int) -> Scenario:
        """The same shape with fewer streams, started at the same rate."""
        return Scenario(
            streams, self.interval_ms, self.duration_s, self.ramp_s * streams / self.streams
        )

    def label(self) -> str:
        return (
            f"{self.streams:,} streams, a chunk every {self.interval_ms:g} ms for "
            f"{self.duration_s:g} s, started over {self.ramp_s:g} s"
        )


@dataclass
class Row:
    scenario: Scenario
    system: str
    report: dict[str, Any]
    server_cpu: float | None  # seconds
    server_cpu_wait: float | None  # seconds runnable but waiting for a CPU
    mock_cpu: float
    load_cpu: float
    wall: float
    rss_peak: int | None
    listen_drops: int
    accept_queue_peak: int | None
    notes: list[str] = field(default_factory=list)


def tiergate_config(path: Path, mock_url: str, scenario: Scenario) -> None:
    """A route with generous timeouts to the mock, one tier without limits or budget."""
    base = f"{mock_url}/v1"
    timeouts = Timeouts(
        connect_seconds=30,
        first_byte_seconds=120,
        total_seconds=min(7200, scenario.duration_s + scenario.ramp_s + 300),
    )
    pricing = Pricing(input_per_million=Decimal("0.27"), output_per_million=Decimal("1.10"))
    route = Route(
        model="bench",
        targets=(
            Target(
                name="primary",
                base_url=base,
                upstream_model="bench-model",
                weight=80,
                priority=0,
                pricing=pricing,
            ),
            Target(
                name="secondary",
                base_url=base,
                upstream_model="bench-model",
                weight=20,
                priority=0,
                pricing=pricing,
            ),
        ),
        timeouts=timeouts,
    )
    tier = Tier(name="bench", key_sha256=(hash_client_key(harness.KEY),), models=("bench",))
    config = seal(gateway="bench", namespace="bench", routes=[route], tiers=[tier])
    path.write_bytes(canonical_json(config))


def measure(
    system: str,
    url: str,
    scenario: Scenario,
    binary: Path,
    mock: harness.Process,
    server: harness.Process | None,
    paused: list[harness.Process],
) -> Row:
    """One run of the load generator against ``url``; the other servers sit paused."""
    for other in paused:
        other.pause(True)
    measured = [mock] + ([server] if server else [])
    try:
        with harness.Sampler(server, measured) as usage:
            report, load_cpu = harness.run_load(
                binary,
                url + "/v1/chat/completions",
                streams=scenario.streams,
                ramp_seconds=scenario.ramp_s,
                timeout_seconds=scenario.duration_s + scenario.ramp_s + 120,
            )
    finally:
        for other in paused:
            other.pause(False)
    return Row(
        scenario,
        system,
        report,
        usage.cpu.get(server.name) if server else None,
        usage.cpu_wait.get(server.name) if server else None,
        usage.cpu[mock.name],
        load_cpu,
        usage.wall,
        usage.rss_peak if server else None,
        usage.listen_drops,
        usage.accept_queue_peak if server else None,
    )


def errors_text(report: dict[str, Any]) -> str:
    errors: dict[str, int] = report["errors"]
    if not errors:
        return "0"
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(errors.items()))
    return f"{sum(errors.values())} ({kinds})"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[Row]) -> None:
    print(
        "| scenario | system | streams ok | errors (by kind) | time to first chunk p50 / p99 (ms) "
        "| added p99 (ms) | gap over the interval p50 / p99 (ms) | added p99 (ms) "
        "| chunk delay p50 / p99 (ms) | server RSS peak (MB) | server CPU (% of a core) "
        "| server waiting for a CPU (%) | server CPU per chunk (us) | core 1: mock + load CPU (%) "
        "| load start lag p99 (ms) | server accept queue peak | SYNs dropped, accept queue full |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    direct: dict[Scenario, Row] = {}
    for row in rows:
        report, sc = row.report, row.scenario
        base = direct.get(sc) if row.server_cpu is not None else None
        if row.server_cpu is None:
            direct[sc] = row
        ttfc, gap, delay = report["ttfc_ms"], report["gap_ms"], report["delay_ms"]
        added_ttfc = ttfc["p99"] - base.report["ttfc_ms"]["p99"] if base else None
        added_gap = gap["p99"] - base.report["gap_ms"]["p99"] if base else None
        events = max(report["content_events"], 1)
        per_chunk = row.server_cpu / events * 1e6 if row.server_cpu is not None else None
        server_share = row.server_cpu / row.wall * 100 if row.server_cpu is not None else None
        waiting = row.server_cpu_wait / row.wall * 100 if row.server_cpu_wait is not None else None
        core1 = (row.mock_cpu + row.load_cpu) / row.wall * 100
        rss = row.rss_peak / 2**20 if row.rss_peak else None
        print(
            f"| {sc.streams:,} x {sc.interval_ms:g} ms, {sc.duration_s:g} s, ramp {sc.ramp_s:g} s "
            f"| {row.system} | {report['ok']:,} | {errors_text(report)} "
            f"| {ttfc['p50']:.1f} / {ttfc['p99']:.1f} | {fmt(added_ttfc)} "
            f"| {gap['p50'] - sc.interval_ms:.1f} / {gap['p99'] - sc.interval_ms:.1f} "
            f"| {fmt(added_gap)} | {delay['p50']:.1f} / {delay['p99']:.1f} | {fmt(rss, 0)} "
            f"| {fmt(server_share, 0)} | {fmt(waiting, 0)} | {fmt(per_chunk, 0)} | {core1:.0f} "
            f"| {report['start_lag_ms']['p99']:.1f} | {fmt(row.accept_queue_peak, 0)} "
            f"| {row.listen_drops:,} |"
        )


def goal_lines(rows: list[Row]) -> list[str]:
    """tiergate against the issue's goals (per worker), met or missed by how much."""
    lines = []
    direct = {row.scenario: row for row in rows if row.server_cpu is None}
    for row in rows:
        base = direct.get(row.scenario)
        if row.system != "tiergate" or base is None:
            continue
        checks = [
            ("errors", sum(row.report["errors"].values()), 0, ""),
            (
                "added gap p99",
                row.report["gap_ms"]["p99"] - base.report["gap_ms"]["p99"],
                GOAL_ADDED_GAP_MS,
                " ms",
            ),
            (
                "added time to first chunk p99",
                row.report["ttfc_ms"]["p99"] - base.report["ttfc_ms"]["p99"],
                GOAL_ADDED_TTFC_MS,
                " ms",
            ),
            ("RSS peak", (row.rss_peak or 0) / 2**20, GOAL_RSS_MB, " MB"),
        ]
        verdicts = []
        for what, value, goal, unit in checks:
            shown = f"{value:,.1f}{unit}" if unit else f"{value:,}"
            if value <= goal:
                verdicts.append(f"{what} {shown} <= {goal:g}{unit}: met")
            else:
                verdicts.append(
                    f"{what} {shown} > {goal:g}{unit}: MISSED by {value - goal:,.1f}{unit}"
                )
        lines.append(f"{row.scenario.label()}: " + "; ".join(verdicts))
    return lines


def run_scenario(
    scenario: Scenario,
    args: argparse.Namespace,
    binary: Path,
    folder: Path,
    index: int,
    notes: list[str],
) -> list[Row]:
    rows: list[Row] = []
    mock = harness.start_mock(
        binary,
        chunks=scenario.chunks,
        interval_ms=scenario.interval_ms,
        log=folder / f"mock-{index}.log",
    )
    try:
        config = folder / f"tiergate-{index}.json"
        tiergate_config(config, mock.url, scenario)
        log = folder / f"tiergate-{index}.log"
        gc_out = folder / f"gc-{index}.json" if args.gc_probe or args.profile else None
        profile = folder / f"profile-{index}.txt" if args.profile else None
        gateway = harness.start_gateway(
            args.gateway_python,
            config,
            max_connections=scenario.streams + 64,
            log=log,
            gc_probe=gc_out,
            profile=profile,
        )
        try:
            rows.append(measure("direct (mock)", mock.url, scenario, binary, mock, None, [gateway]))
            print(f"  direct: {errors_text(rows[-1].report)} errors", file=sys.stderr)
            for tree in args.tree:  # before this tree's row, which the notes below describe
                rows.append(
                    other_tree(tree, scenario, args, binary, folder, index, config, mock, gateway)
                )
                rows[-1].notes.append(f"{rows[-1].system}: the gateway of {tree}")
            rows.append(measure("tiergate", gateway.url, scenario, binary, mock, gateway, []))
            print(f"  tiergate: {errors_text(rows[-1].report)} errors", file=sys.stderr)
        finally:
            gateway.stop()
        if gc_out is not None and gc_out.exists():
            pauses = json.loads(gc_out.read_text())
            rows[-1].notes.append(
                "collector pauses (whole gateway life): "
                + "; ".join(
                    f"gen{gen} {p['collections']:,} collections, {p['total_ms']:,.0f} ms in all, "
                    f"p99 {p['p99_ms']:.1f} ms, max {p['max_ms']:.1f} ms, {p['over_10ms']} over 10 ms"
                    for gen, p in sorted(pauses.items())
                )
            )
        if profile is not None and profile.exists():
            print(f"\ncProfile of tiergate, {scenario.label()}:\n{profile.read_text()}")
        emfile = harness.log_lines(log, "Too many open files", "EMFILE")
        if emfile:
            rows[-1].notes.append(f"{emfile} gateway log lines name 'Too many open files'")
        for row in rows:
            deciles = row.report.get("ttfc_ms_by_start_decile") or []
            row.notes.append(
                "time to first chunk p99 by tenth of the ramp (ms): "
                + ", ".join(f"{d['p99']:,.0f}" for d in deciles)
            )
            for kind, text in row.report.get("examples", {}).items():
                row.notes.append(f"first {kind}: {text}")
        failures = harness.log_lines(log, '"level":"ERROR"', '"level":"WARNING"')
        if failures:
            rows[-1].notes.append(f"{failures} warning/error lines in the gateway log")
        if args.litellm.joinpath("litellm").exists():
            rows.extend(run_litellm(scenario, args, binary, folder, mock, index, notes))
    finally:
        mock.stop()
    return rows


def other_tree(
    tree: Path,
    scenario: Scenario,
    args: argparse.Namespace,
    binary: Path,
    folder: Path,
    index: int,
    config: Path,
    mock: harness.Process,
    paused: harness.Process,
) -> Row:
    """The same scenario through another checkout's gateway (``paused``, this tree's, waits)."""
    name = f"tiergate@{tree.name}"
    other = harness.start_gateway(
        args.gateway_python,
        config,
        max_connections=scenario.streams + 64,
        log=folder / f"{name}-{index}.log",
        name=name,
        tree=tree,
    )
    try:
        row = measure(name, other.url, scenario, binary, mock, other, [paused])
    finally:
        other.stop()
    print(f"  {name}: {errors_text(row.report)} errors", file=sys.stderr)
    return row


def run_litellm(
    scenario: Scenario,
    args: argparse.Namespace,
    binary: Path,
    folder: Path,
    mock: harness.Process,
    index: int,
    notes: list[str],
) -> list[Row]:
    """LiteLLM at the first stream count it serves without errors (fewer streams each time)."""
    rows: list[Row] = []
    try:
        server = harness.start_litellm(args.litellm, folder, mock.url, folder / "litellm.log")
    except RuntimeError as exc:
        notes.append(f"LiteLLM: failed to start ({exc}), skipped")
        return rows
    try:
        for streams in sorted(
            {min(n, scenario.streams) for n in args.litellm_streams}, reverse=True
        ):
            smaller = scenario.scaled(streams)
            rows.append(measure("direct (mock)", mock.url, smaller, binary, mock, None, [server]))
            rows.append(
                measure(f"LiteLLM @{streams:,}", server.url, smaller, binary, mock, server, [])
            )
            if not rows[-1].report["errors"]:
                break
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        type=Scenario.parse,
        action="append",
        help="STREAMS:INTERVAL_MS:DURATION_S:RAMP_S (repeat for several; default: "
        + ", ".join(DEFAULT_SCENARIOS)
        + ")",
    )
    parser.add_argument(
        "--gateway-python",
        type=Path,
        default=harness.python_default(),
        help="interpreter for tiergate (with the gateway's requirements), default: this one",
    )
    parser.add_argument(
        "--litellm", type=Path, default=harness.DEFAULT_LITELLM, help="bin dir of LiteLLM's venv"
    )
    parser.add_argument(
        "--litellm-streams",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1000, 300, 100],
        help="stream counts to try LiteLLM at, largest first, until one has no errors",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the mock, the load generator and the servers (e.g. -10 on a machine "
        "busy with other work; negative needs CAP_SYS_NICE)",
    )
    parser.add_argument(
        "--gc-probe",
        action="store_true",
        help="run tiergate under gc_probe.py and report its garbage-collector pauses",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run tiergate under cProfile (slower: for where the time goes, not for figures)",
    )
    parser.add_argument(
        "--tree",
        type=lambda text: Path(text).resolve(),
        action="append",
        default=[],
        help="also run the gateway of this checkout (e.g. `git worktree add /tmp/base <commit>`) "
        "in each scenario, right before this tree's, to compare two versions",
    )
    parser.add_argument("--json", type=Path, help="also write every run's raw figures here")
    args = parser.parse_args()
    scenarios: list[Scenario] = args.scenario or [Scenario.parse(s) for s in DEFAULT_SCENARIOS]
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is required (apt-get install -y util-linux)")
    harness.NICE = args.nice
    file_limit = harness.raise_file_limit()
    binary = harness.build_streambench()
    notes: list[str] = []
    if not args.litellm.joinpath("litellm").exists():
        notes.append(f"LiteLLM: no venv at {args.litellm}, skipped")
    for scenario in scenarios:
        need = scenario.streams * FDS_PER_STREAM + FDS_SPARE
        if need > file_limit:
            notes.append(
                f"{scenario.label()}: tiergate needs about {need:,} open files (2 a stream) and "
                f"this machine's hard limit is {file_limit:,} (raising it needs CAP_SYS_RESOURCE): "
                f"about {(need - file_limit + 1) // FDS_PER_STREAM:,} streams cannot get an "
                "upstream connection at the peak"
            )
    load_before = harness.load_average()
    folder = Path(tempfile.mkdtemp(prefix="tiergate-streams-"))
    rows: list[Row] = []
    try:
        for index, scenario in enumerate(scenarios):
            print(f"{scenario.label()} ...", file=sys.stderr)
            rows.extend(run_scenario(scenario, args, binary, folder, index, notes))
    finally:
        if args.json is None:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print_table(rows)
    print()
    print(
        f"streambench {binary.parent.name}; tiergate: one worker on core {harness.SERVER_CORE} "
        f"({args.gateway_python}); mock and load generator on core {harness.LOAD_CORE}; "
        f"niceness {args.nice}; open-file limit {file_limit:,}; load average before: {load_before:.2f}, after: "
        f"{harness.load_average():.2f} (2 cores, shared)"
    )
    print(
        "gap over the interval: time between two content events as the client saw them, minus "
        "the mock's interval; chunk delay: the mock's write to the client's read (wall clocks); "
        "added: tiergate's p99 minus the direct run's p99 in the same scenario; server waiting "
        "for a CPU: the time it was runnable while another process had its core "
        "(/proc/PID/task/*/schedstat), in % of the run; accept queue peak: connections the kernel "
        "completed that the server had not accepted yet (sampled every 0.25 s); SYNs dropped: TcpExt ListenDrops during "
        "the run (any listener on the machine; a dropped SYN is retried after 1, 3, 7 s...)"
    )
    for line in goal_lines(rows):
        print(f"goal: {line}")
    for row in rows:
        for note in row.notes:
            print(f"note: {row.scenario.label()}, {row.system}: {note}")
    for note in notes:
        print(f"note: {note}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [asdict(row) for row in rows] + [{"logs": str(folder)}], indent=1, default=str
            )
        )


if __name__ == "__main__":
    main()
