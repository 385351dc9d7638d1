"""The dashboard and the rules on a real Prometheus holding a synthetic fleet
(docs/performance.md, "A fleet on one Prometheus"; not part of `make test`).

    python -m bench.fleet --nodes 100 [--nodes 1000 ...] [--vms 20] [--hours 6]

1. Scrapes the real exporter once on a compute node's fixture tree (linux-6.18's sysfs,
   procfs-vms' /proc: VMs, ksmd, ksmtuned): the series set of one node and one VM.
2. Streams N nodes' OpenMetrics from it (constant memory) into one file: 30 s samples
   over --hours, values varied per node and over time, counters growing, 5 % of the nodes
   flapping (KSM started and stopped by ksmtuned every 8 minutes, memory short while
   stopped), a tenth of the nodes with VMs that lose more than 64 MiB to KSM; plus `up`
   and a day of the 2m run-state steps the windows group records (the raw data holds
   only --hours). `promtool tsdb create-blocks-from openmetrics` backfills it.
3. Starts Debian's Prometheus on the blocks with the rules `make mixin` renders, lets
   the rules evaluate, and reads each group's evaluationTime from /api/v1/rules.
   A rule's sample may not be older than the newest block, and a live evaluation sees
   the last samples only within the lookback delta (5m): so the fleet's samples end
   when the generation and backfill are expected to be done (--ahead, estimated from
   the samples to write), and the evaluations are read once that time has come, with
   the lookback raised only to cover the minutes they are read over (printed; more if
   the backfill took longer than expected).
4. Sends every query of the dashboard as Grafana sends it, at the data's end: range
   queries over --hours with the step Grafana picks for the panel's width, instant
   queries for instant targets, the one selected node in the node rows; alone with
   `stats=all` (samples loaded), then the whole dashboard 6 queries at a time.
5. Checks that the recorded series give the answers of the raw expressions they replace.

Run it with as much disk as the fleet needs (about 80 bytes a sample in OpenMetrics,
deleted after the backfill, and 1.5 bytes a sample in blocks).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import FIXTURES, REPO, copy_fixture, http_get, run_exporter
from tests.support.dashboard_queries import families, fill
from tests.support.prometheus import run_server

JOB = "ksm-exporter"
STEP = 30  # seconds between samples: the scrape interval
VM_LABELS = ("namespace", "pid", "uuid", "vm", "vmid")
CLUSTERS = 10
FLAP_PERIOD = 8 * 60  # a flapping node changes state every 4 minutes
WINDOWS_STEP = 120  # ksmWindowsInterval
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
CONCURRENCY = 6  # Grafana's queries in flight per data source (a browser's connections)
PANEL_PIXELS = 1900 / 24  # a grid column on a 1920-pixel screen
# Samples generated and backfilled a second, here with two promtool processes (5,000
# nodes: 760 M in 3,175 s; 1,000: 152 M in 810 s), a little under.
BACKFILL_RATE = 230_000
LOOKBACK = 300  # Prometheus' default --query.lookback-delta
WATCH = 6 * 60  # long enough for two evaluations of the 2m group, four of the others
STARTUP = 5 * 60  # the most Prometheus takes to open 5,000 nodes' blocks here

Sample = tuple[str, dict[str, str], float, str]  # name, labels, value, family type


def exporter_series(tmp: Path) -> list[Sample]:
    """One scrape of the real exporter on a compute node's fixture tree."""
    root = copy_fixture("linux-6.18", tmp)
    shutil.rmtree(root / "proc")
    shutil.copytree(FIXTURES / "procfs-vms/proc", root / "proc", symlinks=True)
    conf = f"--collector.ksmtuned.config={FIXTURES / 'ksmtuned/stock.conf'}"
    with run_exporter(root, conf, tmp=tmp) as exporter:
        status, body = exporter.get()
    assert status == 200, body
    return [
        (s.name, dict(s.labels), s.value, f.type)
        for f in text_string_to_metric_families(body)
        for s in f.samples
    ]


@dataclass
class Template:
    node: list[Sample]  # a node's series, without VMs
    vm: list[Sample]  # one VM's series (the fixture VM with every family), labels removed


def template(samples: list[Sample]) -> Template:
    node = [s for s in samples if "vm" not in s[1]]
    by_vm: dict[str, list[Sample]] = {}
    for s in samples:
        if "vm" in s[1]:
            by_vm.setdefault(s[1]["vm"], []).append(s)
    fullest = max(by_vm.values(), key=len)
    vm = [(n, {k: v for k, v in lb.items() if k not in VM_LABELS}, x, t) for n, lb, x, t in fullest]
    return Template(node, vm)


def labels_text(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Node:
    """A synthetic node: its scale, whether it flaps, its VMs."""

    def __init__(self, i: int, vms: int, rng: random.Random) -> None:
        self.labels = {"job": JOB, "instance": f"node{i:05d}:9941", "cell": f"c{i % CLUSTERS:02d}"}
        self.scale = rng.uniform(0.5, 1.5)
        self.phase = rng.uniform(0, 2 * math.pi)
        self.flapping = rng.random() < 0.05
        self.losing = rng.random() < 0.10
        self.offset = rng.randrange(FLAP_PERIOD)
        self.vms = [
            {
                "vm": f"instance-{i:05x}{k:02d}",
                "pid": str(10000 + k),
                "uuid": "",
                "vmid": "",
                "namespace": "",
            }
            for k in range(vms)
        ]

    def running(self, t: int) -> int:
        if not self.flapping:
            return 1
        return 1 if ((t + self.offset) // (FLAP_PERIOD // 2)) % 2 == 0 else 0

    def changes(self, t: int, t0: int) -> tuple[int, int]:
        """Starts and stops between t0 and t: the half periods begun since, even ones
        running."""
        if not self.flapping:
            return 0, 0
        half = FLAP_PERIOD // 2
        a, b = (t0 + self.offset) // half, (t + self.offset) // half
        starts = b // 2 - a // 2
        return starts, b - a - starts


FLAGS = {
    "ksm_up",
    "ksm_run",
    "ksm_settled",
    "ksm_smart_scan",
    "ksm_use_zero_pages",
    "ksm_merge_across_nodes",
    "ksmtuned_running",
    "ksmtuned_would_run",
    "up",
}


def value(
    name: str, labels: dict[str, str], v0: float, kind: str, node: Node, t: int, t0: int
) -> float:
    if name == "ksm_run_state":
        running = node.running(t)
        return {"running": running, "stopped": 1 - running}.get(labels.get("state", ""), 0)
    if name == "ksm_run":
        return node.running(t)
    if name == "ksm_run_transitions_total":
        starts, stops = node.changes(t, t0)
        if labels.get("cause") != "ksmtuned":
            return v0
        return v0 + {"running": starts, "stopped": stops}.get(labels.get("state", ""), 0)
    if name == "ksm_memory_available_bytes" and node.flapping and not node.running(t):
        return 0.15 * 33619161088  # short of memory while ksmtuned has KSM stopped
    if name in FLAGS or name.endswith("_success") or (v0 in (0.0, 1.0) and kind != "counter"):
        return v0
    if kind == "counter" or name.endswith("_total"):
        return round(v0 * node.scale + max(v0, 10.0) * node.scale * (t - t0) / 3600.0, 3)
    wave = 1 + 0.02 * math.sin(node.phase + t / 1800.0)
    return float(f"{v0 * node.scale * wave:.6g}")


def write_fleet(out: IO[str], tpl: Template, nodes: list[Node], t0: int, t1: int) -> int:
    """The fleet's OpenMetrics, family by family (OpenMetrics wants a family's lines
    together), each series' samples in time order. Returns the number of samples."""
    times = range(t0, t1 + 1, STEP)
    count = 0
    families: dict[str, list[tuple[dict[str, str], float, str, bool]]] = {}
    for name, labels, v0, kind in tpl.node:
        families.setdefault(name, []).append((labels, v0, kind, False))
    for name, labels, v0, kind in tpl.vm:
        families.setdefault(name, []).append((labels, v0, kind, True))
    families.setdefault("up", []).append(({}, 1.0, "gauge", False))
    for name, series in families.items():
        out.write(f"# TYPE {name} unknown\n")
        for node in nodes:
            for labels, v0, kind, per_vm in series:
                for vm_i, vm in enumerate(node.vms if per_vm else [{}]):
                    lb = labels_text({**labels, **vm, **node.labels})
                    if name == "ksm_process_profit_bytes" and node.losing and vm_i < 3:
                        v = -100 * 2**20 - vm_i
                        out.write("".join(f"{name}{lb} {v} {t}\n" for t in times))
                    else:
                        out.write(
                            "".join(
                                f"{name}{lb} {value(name, labels, v0, kind, node, t, t0)} {t}\n"
                                for t in times
                            )
                        )
                    count += len(times)
    # The 2m steps of KSM's run state a day back, as ksm-exporter.windows records them
    # (the raw data holds only --hours of it: before, each node as at the start).
    step = "instance:ksm_run_state_running:max_over_time_step"
    out.write(f"# TYPE {step} unknown\n")
    start = t1 - 86400 + WINDOWS_STEP
    for node in nodes:
        lb = labels_text({**node.labels, "state": "running"})
        lines = []
        for t in range(start - start % WINDOWS_STEP, t1 + 1, WINDOWS_STEP):
            was = max(node.running(s) for s in range(t - WINDOWS_STEP, t + 1, STEP))
            lines.append(f"{step}{lb} {was} {t}\n")
        out.write("".join(lines))
        count += len(lines)
    out.write("# EOF\n")
    return count


# Grafana: the interval is the time range over the panel's data points (its width in
# pixels), rounded to a "nice" value, never below the data source's scrape interval.
NICE = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600]


def grafana_step(range_s: int, width: int) -> int:
    raw = range_s / max(width * PANEL_PIXELS, 1)
    nice = min(NICE, key=lambda n: abs(n - raw))
    return max(nice, STEP)


@dataclass
class Query:
    where: str
    expr: str
    instant: bool
    step: int


def dashboard_queries(dashboard: dict[str, Any], instance: str, hours: int) -> list[Query]:
    out = []
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        step = grafana_step(hours * 3600, panel["gridPos"]["w"])
        rate = f"{max(step + STEP, 4 * STEP)}s"
        for t in panel["targets"]:
            expr = fill(t["expr"], [JOB], [instance], rate)
            out.append(
                Query(
                    f"{row} / {panel['title']} / {t['refId']}", expr, bool(t.get("instant")), step
                )
            )
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            out.append(
                Query(f"annotation / {a['name']}", fill(a["expr"], [JOB], [instance]), False, 60)
            )
    return out


class Api:
    def __init__(self, address: str) -> None:
        self.base = f"http://{address}/api/v1/"

    def get(self, path: str, timeout: float = 300, **params: Any) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        status, body = http_get(url, timeout=timeout)
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {status} {body[:300]}")
        return reply["data"]

    def run(self, q: Query, end: int, hours: int, stats: bool = False) -> tuple[float, Any]:
        params: dict[str, Any] = {"query": q.expr}
        if stats:
            params["stats"] = "all"
        start = time.perf_counter()
        if q.instant:
            data = self.get("query", time=end, **params)
        else:
            data = self.get("query_range", start=end - hours * 3600, end=end, step=q.step, **params)
        return time.perf_counter() - start, data


def time_rules(api: Api, rules: Path, at: int) -> dict[str, Any]:
    """Each rule's expression as an instant query at `at`, alone; per group the sum. In
    count(): Prometheus evaluates the whole expression, but answers with one number
    rather than a series per node in JSON, which a rule's evaluation does not write."""
    groups = {}
    for g in yaml.safe_load(rules.read_text())["groups"]:
        total, samples, slowest = 0.0, 0, ("", 0.0, 0)
        for r in g["rules"]:
            q = Query(r.get("record") or r["alert"], f"count(({r['expr']}))", True, STEP)
            took, data = api.run(q, at, 0, stats=True)
            loaded = data.get("stats", {}).get("samples", {}).get("totalQueryableSamples", 0)
            total += took
            samples += loaded
            if took > slowest[1]:
                slowest = (q.where, took, loaded)
        groups[g["name"]] = {"seconds": total, "samples": samples, "slowest": slowest}
        print(
            f"  group {g['name']}: {total:.3f} s, {samples:,} samples; slowest {slowest[0]}"
            f" {slowest[1]:.3f} s, {slowest[2]:,} samples"
        )
    return groups


def time_dashboard(
    api: Api, label: str, queries: list[Query], at: int, hours: int
) -> dict[str, Any]:
    rows = []
    for q in queries:
        try:
            took, data = api.run(q, at, hours, stats=True)
            loaded = data.get("stats", {}).get("samples", {}).get("totalQueryableSamples", 0)
            rows.append((q.where, took, loaded, ""))
        except RuntimeError as e:
            rows.append((q.where, 0.0, 0, str(e)[:120]))
    loads = [load_dashboard(api, queries, at, hours) for _ in range(3)]
    rows.sort(key=lambda r: -r[1])
    took = ", ".join(f"{x:.2f}" for x in loads)
    print(f"  dashboard {label}: {len(queries)} queries, loads {took} s")
    for where, took_s, loaded, error in rows[:8]:
        print(f"    {took_s:7.3f} s {loaded:>12,} samples  {where} {error}")
    biggest = max(rows, key=lambda r: r[2])
    print(f"    most samples: {biggest[2]:,} ({biggest[0]})")
    return {"loads": loads, "queries": rows}


def load_dashboard(api: Api, queries: list[Query], end: int, hours: int) -> float:
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda q: api.run(q, end, hours), queries))
    return time.perf_counter() - start


# Each recorded answer beside the raw expression it replaces (the fleet panels' queries
# before the recording rules, and the records' own definitions on raw series).
EQUIVALENT = [
    ("saved", "sum(job:ksm_saved_bytes:sum)", "sum(ksm_saved_bytes)"),
    ("running", "sum(job:ksm_run_state_running:sum)", 'sum(ksm_run_state{state="running"})'),
    (
        "without sysfs",
        "sum(job:ksm_up:count) - sum(job:ksm_up:sum)",
        "count(ksm_up == 0) or vector(0)",
    ),
    ("targets down", "sum(job:up:count) - sum(job:up:sum)", "count(up == 0) or vector(0)"),
    ("general profit", "sum(job:ksm_general_profit_bytes:sum)", "sum(ksm_general_profit_bytes)"),
    ("VMs", "sum(instance:ksm_process:count)", "count(ksm_process_merging_pages)"),
    (
        "VMs per cluster",
        "job:ksm_process:count",
        "count by (job, cell) (ksm_process_merging_pages)",
    ),
    (
        "VMs losing per node",
        "instance:ksm_process_profit_bytes:count_below_threshold",
        "count by (job, instance, cell) (ksm_process_profit_bytes < -67108864)",
    ),
    (
        "flapping per node",
        "instance:ksm_run_transitions:increase_flapping_window",
        "round(sum by (job, instance, cell) (increase(ksm_run_transitions_total[1h])))",
    ),
    (
        "flapping per node and cause",  # as KsmFlapping's description asks
        "round(increase(instance_cause:ksm_run_transitions:sum[1h]))",
        "round(sum by (job, instance, cell, cause) (increase(ksm_run_transitions_total[1h])))",
    ),
    (
        "ran within a day",
        "instance:ksm_run_state_running:max_over_time_ran_within",
        'max_over_time(ksm_run_state{state="running"}[1d])',
    ),
    (
        "full scans per second",
        "instance:ksm_full_scans:rate_full_scan_window",
        "rate(ksm_full_scans_total[6h])",
    ),
    (
        "collectors",
        "min by (collector) (job_collector:ksm_scrape_collector_success:min)",
        "min by (collector) (ksm_scrape_collector_success)",
    ),
]


# Records that are a window over another record: that one holds, at each evaluation, the
# sums of the last scrape before it (promtool and Prometheus evaluate a group at an offset
# of its own within the interval), so the window's samples are the scrapes' up to that
# one, and the raw expression is asked there. Asked at the evaluation itself, its window
# starts up to an interval later and can miss a change the record counts.
AT_LAST_SCRAPE = {"flapping per node", "flapping per node and cause"}


def answers(api: Api, expr: str, at: float) -> dict[str, float]:
    result = api.get("query", query=expr, time=at)["result"]
    return {
        json.dumps(
            {k: v for k, v in s["metric"].items() if k != "__name__"}, sort_keys=True
        ): float(s["value"][1])
        for s in result
    }


def check_equivalence(api: Api, end: int) -> list[str]:
    """Each pair at the timestamp of the last recorded sample up to the data's end (an
    evaluation of the group, backfilled): later, a window's raw samples stop before the
    window does and `increase` extrapolates them otherwise than recorded sums that go on
    for the lookback."""
    failures = []
    for name, recorded, raw in EQUIVALENT:
        record = re.findall(r"[a-z_]+:[a-z_:]+", recorded)[0]
        stamps = api.get("query", query=f"timestamp({record})", time=end)["result"]
        at = max([float(s["value"][1]) for s in stamps] or [end])  # none: both empty
        scrape = at // STEP * STEP if name in AT_LAST_SCRAPE else at  # scrapes: t0 + k STEP
        a, b = answers(api, recorded, at), answers(api, raw, scrape)
        same = a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-6) for k in a)
        print(f"  {'same' if same else 'DIFFERENT'}: {name} ({len(a)} series)")
        if not same:
            failures.append(name)
            for k in sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[:3]:
                print(f"    at {at}: {k} recorded {a.get(k)}, raw {b.get(k)} (at {scrape})")
    return failures


def wait_for_compactions(address: str) -> None:
    """Until Prometheus has compacted the backfilled blocks (overlapping ones merged, 2h
    ones into larger): its compactor runs every minute; quiet when a run did nothing."""

    def compactions() -> str:
        body = http_get(f"http://{address}/metrics", timeout=30)[1]
        return "".join(
            line
            for line in body.splitlines()
            if line.startswith("prometheus_tsdb_compactions_total")
        )

    time.sleep(70)
    before = compactions()
    while True:
        time.sleep(65)
        now = compactions()
        if now == before:
            return
        before = now


def rule_groups(api: Api) -> dict[str, tuple[float, float]]:
    return {
        g["name"]: (g["lastEvaluation"], g["evaluationTime"]) for g in api.get("rules")["groups"]
    }


def backfill_records(data: Path, rules: Path, t0: int, t1: int, work: Path) -> None:
    """The recorded series over the fleet's hours, as if the rules had run all along:
    `promtool tsdb create-blocks-from rules` evaluates them on a Prometheus holding the
    raw blocks (each group at its interval). Not the 2m run-state steps, which the fleet
    holds a day of already, and which "ran within a day" reads. promtool does not
    backfill a record from another it backfills: a record goes in the pass after the
    records it reads (a sum of a sum, then its increase, is three passes)."""
    every = yaml.safe_load(rules.read_text())["groups"]
    skip = "instance:ksm_run_state_running:max_over_time_step"
    reads = {
        r["record"]: families(r["expr"])
        for g in every
        for r in g["rules"]
        if "record" in r and r["record"] != skip
    }
    deps = {name: names & reads.keys() - {name} for name, names in reads.items()}
    passes: dict[str, int] = {}
    while len(passes) < len(deps):
        ready = {
            name: 1 + max((passes[n] for n in names), default=-1)
            for name, names in deps.items()
            if name not in passes and names <= passes.keys()
        }
        if not ready:
            raise SystemExit(f"records that read each other: {sorted(deps.keys() - passes.keys())}")
        passes.update(ready)
    for depth in range(max(passes.values(), default=-1) + 1):
        groups = [
            {**g, "rules": [r for r in g["rules"] if passes.get(r.get("record", "")) == depth]}
            for g in every
        ]
        backfill_pass(data, groups, t0, t1, work)


def backfill_pass(data: Path, groups: list[Any], t0: int, t1: int, work: Path) -> None:
    records = work / "records.yml"
    records.write_text(yaml.safe_dump({"groups": [g for g in groups if g["rules"]]}))
    out = work / "records"
    with prometheus(data, None, 300, work, ["--query.max-samples=2000000000"]) as address:
        subprocess.run(
            [
                PROMTOOL,
                "tsdb",
                "create-blocks-from",
                "rules",
                f"--start={t0}",
                f"--end={t1}",
                f"--url=http://{address}",
                f"--output-dir={out}",
                f"--eval-interval={STEP}s",
                str(records),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    for block in out.iterdir():
        block.rename(data / block.name)
    out.rmdir()


@contextlib.contextmanager
def prometheus(
    data: Path,
    rules: Optional[Path],
    lookback: int,
    tmp: Path,
    extra: Optional[list[str]] = None,
) -> Iterator[str]:
    """Prometheus on the blocks; evaluating `rules` live, if given. Only where that is
    measured: before the data's end, a live evaluation writes its records between the
    backfilled ones (at its own times), and an `increase` over them then differs from
    one over the raw series."""
    config: dict[str, Any] = {"global": {"evaluation_interval": f"{STEP}s"}}
    if rules is not None:
        config["rule_files"] = [str(rules)]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    args = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=30d",
        f"--query.lookback-delta={lookback}s",
        *(extra or []),
    ]
    with run_server("prometheus", args, tmp) as address:
        yield address


def generate(
    n: int,
    args: argparse.Namespace,
    tpl: Template,
    nodes: list[Node],
    t0: int,
    t1: int,
    data: Path,
    work: Path,
) -> None:
    """The fleet's raw blocks in `data`. In files of --chunk nodes, each backfilled
    (--jobs at a time) and deleted: the disk holds --jobs + 1 of them at most. Their
    blocks overlap in time; Prometheus compacts them when it starts."""
    began = time.time()
    samples = size = 0

    def backfill(text: Path) -> None:
        subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(text), str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        text.unlink()

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        pending: list[concurrent.futures.Future[None]] = []
        for first in range(0, n, args.chunk):
            text = work / f"fleet-{n}-{first}.om"
            with text.open("w", buffering=1 << 22) as out:
                samples += write_fleet(out, tpl, nodes[first : first + args.chunk], t0, t1)
            size += text.stat().st_size
            pending.append(pool.submit(backfill, text))
            while sum(not f.done() for f in pending) > args.jobs:
                time.sleep(1)
        for f in pending:
            f.result()
    print(
        f"{n} nodes: {samples:,} samples, {size / 1e9:.1f} GB of OpenMetrics"
        f", generated and backfilled in {time.time() - began:.0f} s"
    )


def keep_raw(data: Path, into: Path, t0: int, t1: int) -> None:
    """The raw blocks aside (about 1.5 bytes a sample), to measure other rules on the
    same fleet without generating it again (--raw)."""
    shutil.copytree(data, into)
    (into / "fleet.json").write_text(json.dumps({"t0": t0, "t1": t1}))


def reuse_raw(kept: Path, data: Path) -> tuple[int, int]:
    span = json.loads((kept / "fleet.json").read_text())
    shutil.copytree(kept, data, ignore=shutil.ignore_patterns("fleet.json"))
    return span["t0"], span["t1"]


def wait_until(t: float) -> None:
    if time.time() < t:
        print(f"  waiting {t - time.time():.0f} s for the data's end")
        time.sleep(t - time.time())


def measure(n: int, args: argparse.Namespace, tpl: Template, work: Path) -> dict[str, Any]:
    rng = random.Random(n)
    nodes = [Node(i, args.vms, rng) for i in range(n)]
    began = time.time()
    series = len(tpl.node) + 1 + len(tpl.vm) * args.vms
    expected = series * n * (args.hours * 3600 // STEP + 1) + n * 86400 // WINDOWS_STEP
    # The backfill, then the recorded series, the compactions and the queries at the end.
    ahead = args.ahead if args.ahead is not None else expected * 1.15 / BACKFILL_RATE + 300
    t1 = int(began + ahead) // STEP * STEP
    t0 = t1 - args.hours * 3600
    data = work / f"data-{n}"
    if args.raw:
        t0, t1 = reuse_raw(args.raw / str(n), data)
        print(f"{n} nodes: raw blocks of {args.raw / str(n)}, {t0} to {t1}")
    else:
        generate(n, args, tpl, nodes, t0, t1, data, work)
        if args.keep_raw:
            keep_raw(data, args.keep_raw / str(n), t0, t1)
    out: dict[str, Any] = {"nodes": n, "series": series * n, "samples": expected}
    rules = REPO / "rules/ksm-exporter.rules.yml"
    started = time.time()
    backfill_records(data, rules, t0, t1, work)
    print(f"  recorded series backfilled in {time.time() - started:.0f} s")
    # At the data's end, with Prometheus' own 5m lookback: each rule's expression as the
    # group would evaluate it, and the dashboards.
    with prometheus(data, None, LOOKBACK, work) as address:
        api = Api(address)
        wait_for_compactions(address)
        out["rules"] = time_rules(api, rules, t1)
        out["dashboards"] = {}
        instance = nodes[1].labels["instance"]
        for label, path in [("after", REPO / "grafana/ksm-exporter.json"), *args.before]:
            queries = dashboard_queries(json.loads(Path(path).read_text()), instance, args.hours)
            out["dashboards"][label] = time_dashboard(api, label, queries, t1, args.hours)
    # Now, once the data's end has come: Prometheus' own evaluations of the groups, and
    # the recorded answers against the raw ones. The lookback covers the evaluations
    # over WATCH from the data's end: more if the backfill took longer than expected
    # (or the blocks are kept ones), when the rules' windows also hold less data.
    wait_until(t1 + STEP)
    # Prometheus opening a large fleet's blocks takes minutes (STARTUP): no evaluation
    # counted may come later than the lookback reaches, or it reads nothing.
    lookback = max(LOOKBACK, int(time.time() - t1) + WATCH + STARTUP)
    with prometheus(data, rules, lookback, work) as address:
        api = Api(address)
        out["lookback"] = lookback
        seen: dict[str, dict[float, float]] = {}
        deadline = min(time.time() + WATCH, t1 + lookback - STEP)
        while time.time() < deadline:
            for name, (last, took) in rule_groups(api).items():
                if took > 0:
                    seen.setdefault(name, {})[last] = took
            windows = len(seen.get("ksm-exporter.windows", {}))
            if windows >= 2 and all(len(v) >= 4 for v in seen.values()):
                break
            time.sleep(5)
        out["groups"] = {k: sorted(v.values()) for k, v in seen.items()}
        print(f"  Prometheus' evaluations, lookback {lookback} s:")
        for name, times in out["groups"].items():
            print(f"    group {name}: {', '.join(f'{x:.3f}' for x in times)} s")
        out["different"] = check_equivalence(api, t1)
    shutil.rmtree(data)
    return out


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, action="append", help="fleet sizes (100)")
    parser.add_argument("--vms", type=int, default=20, help="VMs per node (20)")
    parser.add_argument("--hours", type=int, default=6, help="hours of 30 s samples (6)")
    parser.add_argument(
        "--before",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "DASHBOARD"),
        help="another dashboard JSON to time the same way (e.g. the one of an earlier commit)",
    )
    parser.add_argument("--chunk", type=int, default=500, help="nodes per OpenMetrics file")
    parser.add_argument("--jobs", type=int, default=2, help="promtool runs at a time")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp"), help="where the blocks go")
    parser.add_argument("--json", type=Path, help="write the figures there")
    parser.add_argument(
        "--ahead",
        type=int,
        help="seconds from now to the data's end (estimated from the samples to write)",
    )
    parser.add_argument(
        "--keep-raw", type=Path, help="copy each fleet's raw blocks into DIR/<nodes>"
    )
    parser.add_argument(
        "--raw", type=Path, help="use the raw blocks --keep-raw kept in DIR/<nodes>"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ksm-fleet-", dir=args.work) as tmp:
        work = Path(tmp)
        tpl = template(exporter_series(work / "node"))
        print(
            f"one node: {len(tpl.node) + 1} series without VMs (up included), {len(tpl.vm)} per VM"
        )
        results = [measure(n, args, tpl, work) for n in args.nodes or [100]]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
