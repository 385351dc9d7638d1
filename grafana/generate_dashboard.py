#!/usr/bin/env python3
"""Generates grafana/ksm-exporter.json, the Grafana dashboard for ksm-exporter.

    python3 grafana/generate_dashboard.py -o grafana/ksm-exporter.json

The committed JSON is this script's output (tests/test_dashboard.py keeps them in sync).
Node rows follow the selected instances; fleet rows cover every instance of the selected
jobs. The dashboard reads the data source from its `datasource` variable, so it imports
through Grafana's import dialog without any data source UID.

Stdlib only, like rules/generate_rules.py whose recording rules and thresholds it shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rules"))
from generate_rules import (
    FLAPPING_RECORD,
    PRESSURE_RECORD,
    SAVED_RECORD,
    Params,
    stopped_under_pressure,
)

DASHBOARD_FILE = Path(__file__).parent / "ksm-exporter.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RULES = Params()

NODE = 'job=~"$job", instance=~"$instance"'
FLEET = 'job=~"$job"'

Panel = dict[str, Any]

# Grafana units: bytes (IEC), a plain ratio shown as "3 x", pages, seconds, per-second
# rates; "none" only on panels whose values are all mapped to text.
BYTES = "bytes"
TIMES = "suffix:x"
PAGES = "count:pages"
PAGES_PER_S = "count:pages/s"
SECONDS = "s"
PERCENT = "percentunit"
PER_MINUTE = "cpm"

RUNNING = 'state="running"'
UNMERGING = 'state="unmerging"'
NOT_RUNNING = 'state!="running"'
# Aggregations that keep every label but the metric name, for tables that join queries.
EDGE = "max by (job, instance, state)"
PER_VM = "max by (job, instance, vm, pid)"


def node(metric: str, extra: str = "") -> str:
    return f"{metric}{{{NODE}{', ' + extra if extra else ''}}}"


def fleet(metric: str, extra: str = "") -> str:
    return f"{metric}{{{FLEET}{', ' + extra if extra else ''}}}"


def target(expr: str, legend: str = "{{instance}}", *, instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


def _panel(kind: str, title: str, description: str, targets: list[dict[str, Any]]) -> Panel:
    for ref, t in zip("ABCDEFGH", targets):
        t["refId"] = ref
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    width: int = 8,
    threshold: float | None = None,
) -> Panel:
    p = _panel("timeseries", title, description, targets)
    defaults = p["fieldConfig"]["defaults"]
    defaults["unit"] = unit
    defaults["custom"] = {"fillOpacity": 10, "showPoints": "never"}
    if threshold is not None:
        # Drawn as a red line: the value at which the matching alert fires.
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": threshold}],
        }
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    p["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    p["gridPos"] = {"w": width, "h": 8}
    return p


def state_timeline(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    states: dict[int, tuple[str, str]],
    *,
    width: int = 24,
    height: int = 6,
) -> Panel:
    p = _panel("state-timeline", title, description, targets)
    p["fieldConfig"]["defaults"] = {
        "unit": "none",
        "color": {"mode": "thresholds"},
        "mappings": [
            {
                "type": "value",
                "options": {
                    str(value): {"text": text, "color": color, "index": i}
                    for i, (value, (text, color)) in enumerate(sorted(states.items()))
                },
            }
        ],
    }
    p["options"] = {"showValue": "auto", "mergeValues": True, "rowHeight": 0.8}
    p["gridPos"] = {"w": width, "h": height}
    return p


def stat(title: str, description: str, expr: str, unit: str, *, width: int = 6) -> Panel:
    p = _panel("stat", title, description, [target(expr, "")])
    p["fieldConfig"]["defaults"]["unit"] = unit
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"}
    p["gridPos"] = {"w": width, "h": 6}
    return p


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    columns: dict[str, tuple[str, str]],
    *,
    width: int = 12,
    sort_by: str | None = None,
) -> Panel:
    """An instant-query table; `columns` renames each query's value column and gives it a
    unit. Grafana names that column `Value`, or `Value #A`... once several are merged."""
    p = _panel("table", title, description, targets)
    p["fieldConfig"]["defaults"]["unit"] = unit
    p["fieldConfig"]["overrides"] = [
        {
            "matcher": {
                "id": "byName",
                "options": "Value" if len(targets) == 1 else f"Value #{ref}",
            },
            "properties": [
                {"id": "displayName", "value": name},
                {"id": "unit", "value": col_unit},
            ],
        }
        for ref, (name, col_unit) in columns.items()
    ]
    # One row per series: join the instant queries on their labels (the queries drop the
    # metric name, which would keep them apart), drop the time column.
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}}},
    ]
    if sort_by is not None:
        p["options"] = {"sortBy": [{"displayName": sort_by, "desc": True}]}
    p["gridPos"] = {"w": width, "h": 8}
    return p


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


ON = {0: ("no", "text"), 1: ("yes", "green")}


def node_rows() -> Iterator[Panel]:
    yield row("Node: savings ($instance)")
    yield timeseries(
        "KSM saved",
        "pages_sharing * page size: memory KSM saves now.",
        [target(node("ksm_saved_bytes"))],
        BYTES,
    )
    yield timeseries(
        "Sharing ratio",
        "pages_sharing / pages_shared: how many more sites share each shared page. "
        "Higher is better.",
        [target(node("ksm_sharing_ratio"))],
        TIMES,
    )
    yield timeseries(
        "General profit",
        "Saved memory minus the memory of KSM's rmap_items (kernel 6.4+). Below zero KSM "
        "costs more than it saves (alert KsmNegativeGeneralProfit).",
        [target(node("ksm_general_profit_bytes"))],
        BYTES,
        threshold=0,
    )
    yield timeseries(
        "Pages",
        "shared: KSM pages in use; sharing: further mappings of them (the saving); "
        "unshared: unique pages checked again and again; volatile: changing too fast to "
        "merge.",
        [
            target(node(f"ksm_pages_{kind}"), f"{{{{instance}}}} {kind}")
            for kind in ("shared", "sharing", "unshared", "volatile")
        ],
        PAGES,
        width=16,
    )
    yield timeseries(
        "Unshared per sharing page",
        "pages_unshared / pages_sharing. The kernel reads a high ratio as wasted effort; "
        f"the red line is the KsmWastingEffort threshold ({RULES.wasting_ratio:g}).",
        [target(f"{node('ksm_pages_unshared')} / {node('ksm_pages_sharing')}")],
        TIMES,
        threshold=RULES.wasting_ratio,
    )

    yield row("Node: scanning ($instance)")
    yield timeseries(
        "Full-scan rate",
        "Full scans of all mergeable memory completed per minute.",
        [target(f"rate({node('ksm_full_scans_total')}[$__rate_interval]) * 60")],
        PER_MINUTE,
    )
    yield timeseries(
        "Pages scanned and skipped",
        "ksmd's scanning speed; skipped pages come from smart_scan (kernel 6.7+).",
        [
            target(f"rate({node(f'ksm_pages_{kind}_total')}[$__rate_interval])", label)
            for kind, label in (
                ("scanned", "{{instance}} scanned"),
                ("skipped", "{{instance}} skipped"),
            )
        ],
        PAGES_PER_S,
    )
    yield timeseries(
        "Sleep between batches",
        "sleep_millisecs: how long ksmd sleeps after each batch of pages_to_scan pages.",
        [target(node("ksm_sleep_seconds"))],
        SECONDS,
        width=4,
    )
    yield timeseries(
        "Pages per batch",
        "pages_to_scan: pages ksmd scans before it sleeps (set by ksmtuned or the "
        "scan-time advisor).",
        [target(node("ksm_pages_to_scan"))],
        PAGES,
        width=4,
    )

    yield row("Node: run state ($instance)")
    yield state_timeline(
        "Run state",
        "KSM's run file: stopped (0), running (1), unmerging (2). The dashboard "
        "annotations mark each change.",
        [
            target(
                f"max by (job, instance) ({node('ksm_run_state', RUNNING)})"
                f" + 2 * max by (job, instance) ({node('ksm_run_state', UNMERGING)})"
            )
        ],
        {0: ("stopped", "red"), 1: ("running", "green"), 2: ("unmerging", "orange")},
        width=16,
        height=8,
    )
    yield timeseries(
        f"Run-state changes in {RULES.flapping_window}",
        f"From the {FLAPPING_RECORD} recording rule. KsmFlapping fires above "
        f"{RULES.flapping_threshold} (red line).",
        [target(node(FLAPPING_RECORD))],
        "short",
        threshold=RULES.flapping_threshold + 1,
    )
    yield table(
        "Memory at the latest edges",
        "Memory when KSM last went into each state, as the seed's ksmtuned log printed "
        "it: used (MemTotal - MemFree), free (MemFree), available (MemAvailable).",
        [
            target(f"{EDGE} ({node(f'ksm_last_transition_memory_{kind}_bytes')})", instant=True)
            for kind in ("used", "free", "available")
        ]
        + [
            target(f"{EDGE} ({node('ksm_last_transition_timestamp_seconds')}) * 1000", instant=True)
        ],
        BYTES,
        {
            "A": ("Used", BYTES),
            "B": ("Free", BYTES),
            "C": ("Available", BYTES),
            "D": ("At", "dateTimeAsIso"),
        },
        width=16,
    )
    yield timeseries(
        "Available memory",
        "MemAvailable / MemTotal now (MemFree before kernel 3.14), from the "
        f"{PRESSURE_RECORD} recording rule. KsmStoppedUnderMemoryPressure fires when KSM "
        f"is not running while this is below {RULES.pressure_available_ratio:.0%} (red "
        f"line) for {RULES.pressure_for}.",
        [target(node(PRESSURE_RECORD))],
        PERCENT,
        threshold=RULES.pressure_available_ratio,
    )


def per_vm_rows() -> Iterator[Panel]:
    yield row("Per VM ($instance)")
    vm = "{{instance}} {{vm}}"
    saved = (
        f"{node('ksm_process_merging_pages')}"
        f" * on (job, instance) group_left {node('ksm_page_size_bytes')}"
    )
    yield timeseries(
        "Saved per VM (top 10)",
        "Merging pages * page size: what KSM saves on each VM as the kernel reckons it "
        "per process (ksm_merging_pages, kernel 5.19+; what its profit starts from). A "
        "merged page counts for every VM that maps it, the KSM page itself included, so "
        "the VMs of a node add up to (pages_shared + pages_sharing) * page size, one page "
        "per KSM page more than KSM saved.",
        [target(f"topk(10, {saved})", vm)],
        BYTES,
        width=6,
    )
    yield timeseries(
        "KSM profit per VM (lowest 10)",
        "Saved bytes less the memory of the VM's rmap_items (kernel 6.4+), lowest first. "
        "Below zero (red line) KSM costs the VM more memory than it saves; "
        f"KsmVmNegativeProfit fires below -{RULES.vm_negative_profit_bytes / 2**20:g} MiB "
        f"held for {RULES.vm_negative_profit_for}.",
        [target(f"bottomk(10, {node('ksm_process_profit_bytes')})", vm)],
        BYTES,
        threshold=0,
        width=6,
    )
    yield timeseries(
        "KSM metadata per VM (top 10)",
        "rmap_items: KSM keeps one (64 bytes on 64-bit kernels) for each scanned page of "
        "the VM (kernel 6.1+), merged or not: the cost side of the profit.",
        [target(f"topk(10, {node('ksm_process_rmap_items')})", vm)],
        "short",
        width=6,
    )
    yield timeseries(
        "VMs not exported",
        "left out: matching processes beyond --collector.process.max (those with the "
        "fewest merging pages). unreadable: KSM files the exporter may not read (it needs "
        "root or CAP_DAC_READ_SEARCH); vanished: processes that exited while read, "
        "normal when VMs stop.",
        [
            target(node("ksm_process_series_dropped"), "{{instance}} left out"),
            target(
                "sum by (job, instance, reason) "
                f"(increase({node('ksm_process_read_errors_total')}[$__rate_interval]))",
                "{{instance}} {{reason}}",
            ),
        ],
        "short",
        width=6,
    )
    yield table(
        "VMs",
        "Every VM the exporter reads (processes matching --collector.process.pattern, at "
        "most --collector.process.max): saved (merging pages * page size), profit and "
        "rmap_items as in the graphs above; zero pages: empty pages merged with the "
        "kernel's zero page (use_zero_pages, 6.10+); mergeable: some of its memory is "
        "registered for KSM (6.14+); merge any: the whole process is (prctl "
        "PR_SET_MEMORY_MERGE, 6.14+). A column is empty where the kernel does not say.",
        [
            target(f"{PER_VM} ({expr})", instant=True)
            for expr in (
                saved,
                node("ksm_process_profit_bytes"),
                node("ksm_process_rmap_items"),
                node("ksm_process_zero_pages"),
                node("ksm_process_mergeable"),
                node("ksm_process_merge_any"),
            )
        ],
        "short",
        {
            "A": ("Saved", BYTES),
            "B": ("Profit", BYTES),
            "C": ("rmap_items", "short"),
            "D": ("Zero pages", PAGES),
            "E": ("Mergeable", "bool_yes_no"),
            "F": ("Merge any", "bool_yes_no"),
        },
        width=24,
        sort_by="Saved",
    )
    yield row("Cost ($instance)")
    yield timeseries(
        "ksmd CPU",
        "CPU time of the ksmd kernel thread per second: the share of one CPU it uses "
        "(100 % is one CPU busy). pages_to_scan and sleep_millisecs set it (ksmtuned, or "
        "the scan-time advisor within advisor_max_cpu).",
        [target(f"rate({node('ksm_ksmd_cpu_seconds_total')}[$__rate_interval])")],
        PERCENT,
    )
    yield timeseries(
        "Copy-on-write breaks and swap-in copies",
        "cow: writes to a merged page, each making the writer a private copy (cow_ksm, "
        "kernel 5.19+); swap-in: merged pages copied when swapped in (ksm_swpin_copy). A "
        "high copy-on-write rate means KSM merges pages that the guests then write.",
        [
            target(f"rate({node('ksm_cow_breaks_total')}[$__rate_interval])", "{{instance}} cow"),
            target(
                f"rate({node('ksm_swapin_copies_total')}[$__rate_interval])",
                "{{instance}} swap-in",
            ),
        ],
        PAGES_PER_S,
    )
    yield timeseries(
        "Time to settle",
        "From the latest start of KSM until it first counted as settled (pages_sharing "
        "moved by less than 1 % over the last --settle.full-scans full scans). Kept after "
        "KSM stops, until the next start; absent until KSM has settled after a start the "
        "exporter saw.",
        [target(node("ksm_settle_duration_seconds"))],
        SECONDS,
    )
    yield state_timeline(
        "Settled",
        "settled: KSM runs and pages_sharing moved by less than 1 % over the last "
        "--settle.full-scans full scans; settling: KSM runs and is still merging (or a VM "
        "started and it merges again); not running: KSM stopped or unmerging.",
        [
            target(
                f"max by (job, instance) ({node('ksm_settled')})"
                f" + 2 * max by (job, instance) ({node('ksm_run_state', NOT_RUNNING)})"
            )
        ],
        {0: ("settling", "orange"), 1: ("settled", "green"), 2: ("not running", "text")},
    )

    yield row("ksmtuned ($instance)")
    yield timeseries(
        "ksmtuned: free memory and threshold",
        "ksmtuned's rule, each KSM_MONITOR_INTERVAL (60 s): stop KSM when free "
        "(MemFree + Buffers + Cached) is above the threshold (KSM_THRES_COEF % of "
        "MemTotal) and committed + threshold is below MemTotal (next panel); else start "
        "it. Free memory going back and forth across the threshold is the seed's "
        "flapping: merging frees memory, free rises above the threshold, ksmtuned stops "
        "KSM; the guests dirty pages, free falls, ksmtuned starts it again.",
        [
            target(node(f"ksmtuned_{kind}_bytes"), f"{{{{instance}}}} {kind}")
            for kind in ("free", "threshold")
        ],
        BYTES,
        width=12,
    )
    yield timeseries(
        "ksmtuned: committed memory",
        "committed: the resident memory of the qemu processes as ksmtuned sums it. While "
        "committed + threshold is at or above MemTotal, ksmtuned keeps KSM running "
        "whatever free memory says.",
        [
            target(
                f"{node('ksmtuned_committed_bytes')} + {node('ksmtuned_threshold_bytes')}",
                "{{instance}} committed + threshold",
            ),
            target(node("ksm_memory_total_bytes"), "{{instance}} MemTotal"),
        ],
        BYTES,
        width=12,
    )
    yield state_timeline(
        "ksmtuned's decision and KSM",
        "would run: ksmtuned's next look starts KSM (ksmtuned_would_run, computed from "
        "--collector.ksmtuned.config and /proc); KSM running: the run file says running; "
        "ksmtuned alive: a ksmtuned process exists. would run and KSM running differ for "
        "up to KSM_MONITOR_INTERVAL after a crossing; for longer, ksmtuned is not "
        "running or something else writes run.",
        [
            target(node("ksmtuned_would_run"), "{{instance}} would run"),
            target(node("ksm_run_state", RUNNING), "{{instance}} KSM running"),
            target(node("ksmtuned_running"), "{{instance}} ksmtuned alive"),
        ],
        ON,
        height=8,
    )


def fleet_rows() -> Iterator[Panel]:
    yield row("Fleet ($job)")
    yield stat(
        "Saved across the fleet",
        "Memory KSM saves on all nodes of the selected jobs.",
        f"sum({fleet('ksm_saved_bytes')})",
        BYTES,
    )
    yield stat(
        "Nodes running KSM",
        "Nodes whose KSM run state is running.",
        f"sum({fleet('ksm_run_state', RUNNING)})",
        "short",
    )
    yield stat(
        "Nodes without KSM sysfs",
        "Exporters that cannot read /sys/kernel/mm/ksm (alert KsmSysfsMissing).",
        f"count({fleet('ksm_up')} == 0) or vector(0)",
        "short",
    )
    yield stat(
        "Fleet general profit",
        "Sum of general_profit over the nodes that report it (kernel 6.4+).",
        f"sum({fleet('ksm_general_profit_bytes')})",
        BYTES,
    )
    yield timeseries(
        "Saved by job",
        f"From the {SAVED_RECORD} recording rule.",
        [target(fleet(SAVED_RECORD), "{{job}}")],
        BYTES,
        width=12,
    )
    bars = _panel(
        "bargauge",
        "Top nodes by saved memory",
        "The ten nodes where KSM saves the most now.",
        [target(f"topk(10, {fleet('ksm_saved_bytes')})", "{{instance}}", instant=True)],
    )
    bars["targets"][0]["format"] = "time_series"
    bars["fieldConfig"]["defaults"]["unit"] = BYTES
    bars["options"] = {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "reduceOptions": {"calcs": ["lastNotNull"]},
    }
    bars["gridPos"] = {"w": 12, "h": 8}
    yield bars
    yield table(
        "Nodes whose KSM flaps",
        f"Run-state changes in the last {RULES.flapping_window} per node, most first "
        f"({FLAPPING_RECORD}); KsmFlapping fires above {RULES.flapping_threshold}.",
        [target(f"sort_desc({fleet(FLAPPING_RECORD)} > 0)", instant=True)],
        "short",
        {"A": (f"Changes in {RULES.flapping_window}", "short")},
        sort_by=f"Changes in {RULES.flapping_window}",
    )
    yield table(
        "Nodes where KSM is stopped under memory pressure",
        "KSM stopped or unmerging while less than "
        f"{RULES.pressure_available_ratio:.0%} of memory is available now (MemAvailable, "
        f"or MemFree before 3.14, over MemTotal; {PRESSURE_RECORD}): the expression of "
        f"KsmStoppedUnderMemoryPressure, which fires after {RULES.pressure_for}.",
        [target(stopped_under_pressure(RULES, FLEET), instant=True)],
        PERCENT,
        {"A": ("Available now", PERCENT)},
    )
    yield table(
        "VMs where KSM costs more than it saves",
        "VMs whose KSM profit (saved bytes less the memory of their rmap_items, kernel "
        "6.4+) is negative now, lowest first. KsmVmNegativeProfit fires below "
        f"-{RULES.vm_negative_profit_bytes / 2**20:g} MiB held for "
        f"{RULES.vm_negative_profit_for}.",
        [target(f"sort({fleet('ksm_process_profit_bytes')} < 0)", instant=True)],
        BYTES,
        {"A": ("Profit", BYTES)},
    )


def layout(panels: list[Panel]) -> list[Panel]:
    """Give each panel an id and a gridPos: left to right, a row starts a new line."""
    x = y = line_height = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        pos = p.setdefault("gridPos", {"w": 24, "h": 1})
        if p["type"] == "row" or x + pos["w"] > 24:
            y += line_height
            x = line_height = 0
        pos.update(x=x, y=y)
        x += pos["w"]
        line_height = max(line_height, pos["h"])
        if p["type"] == "row":
            x = 24  # nothing shares a row header's line
    return panels


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: nodes come and go
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {},
        "sort": 1,
    }


def build_dashboard() -> dict[str, Any]:
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "uid": "ksm-exporter",
        "title": "KSM (Kernel Same-page Merging)",
        "description": "ksm-exporter: KSM savings, cost and flapping per node and across the "
        "fleet.",
        "tags": ["ksm", "kvm", "memory"],
        "editable": True,
        "schemaVersion": 36,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                },
                variable("job", "Job", "label_values(ksm_up, job)"),
                variable("instance", "Instance", 'label_values(ksm_up{job=~"$job"}, instance)'),
            ]
        },
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "name": "KSM run-state changes",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "orange",
                    # A change shows for two one-minute steps, merged into one region.
                    "expr": f"increase({node('ksm_run_transitions_total')}[2m]) > 0",
                    "step": "1m",
                    "titleFormat": "KSM {{state}}",
                    "textFormat": "{{instance}}",
                    "tagKeys": "instance,state",
                },
            ]
        },
        "panels": layout([*fleet_rows(), *node_rows(), *per_vm_rows()]),
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write here instead of standard output")
    args = parser.parse_args(argv)
    if args.output:
        Path(args.output).write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
