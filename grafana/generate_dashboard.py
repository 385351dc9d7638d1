"""The Grafana dashboard for ksm-exporter, from the configuration the alerts use
(rules/generate_rules.py's Config): the thresholds it draws are the alerts' thresholds.
mixin/generate.py writes it as grafana/ksm-exporter.json (or with an operator's
configuration, see its --help).

Variables: data source, job, cluster (Config.cluster_label, `cell` by default) and one
instance. Fleet rows aggregate every node of the selected jobs and clusters; node rows
show the selected node. Stdlib only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rules"))
from generate_rules import (
    FLAPPING_RECORD,
    PRESSURE_RECORD,
    SAVED_RECORD,
    Config,
    ksmd_cores,
    selector,
    stopped_under_pressure,
)

DASHBOARD_FILE = Path(__file__).parent / "ksm-exporter.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's import dialog asks for this input and sets the datasource variable to it.
DS_INPUT = "DS_PROMETHEUS"

Panel = dict[str, Any]

# Grafana units: bytes (IEC), a plain ratio shown as "3 x", pages, seconds, per-second
# rates; "none" only on panels whose values are all mapped to text.
BYTES = "bytes"
TIMES = "suffix:x"
PAGES = "count:pages"
PAGES_PER_S = "count:pages/s"
SECONDS = "s"
PERCENT = "percentunit"
CORES = "suffix: cores"
# Seconds per full scan averages over this much time: a full scan of a large node takes
# hours, so the usual rate interval would show nothing.
FULL_SCAN_WINDOW = "6h"

RUNNING = 'state="running"'
UNMERGING = 'state="unmerging"'
NOT_RUNNING = 'state!="running"'
# Aggregations that keep every label but the metric name, for tables that join queries.
EDGE = "max by (job, instance, state)"
PER_VM = "max by (job, instance, vm, pid)"


@dataclass(frozen=True)
class Scope:
    """The configuration and the matchers of every query: the configured selector, the
    job and cluster variables (fleet rows), and the instance variable (node rows)."""

    c: Config

    @property
    def fleet_matchers(self) -> str:
        cl = self.c.cluster_label
        return f'job=~"$job", {cl}=~"${cl}"'

    @property
    def node_matchers(self) -> str:
        return f'{self.fleet_matchers}, instance=~"$instance"'

    def node(self, metric: str, extra: str = "") -> str:
        return selector(metric, self.c.selector, self.node_matchers, extra)

    def fleet(self, metric: str, extra: str = "") -> str:
        return selector(metric, self.c.selector, self.fleet_matchers, extra)


def target(expr: str, legend: str = "{{instance}}", *, instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


# Colours. Grafana's default (green, red above 80) paints every byte count red, so every
# panel says what is good and what is bad: savings are good news (green), a loss is red,
# counts of nodes in trouble turn orange or red from 1, neutral figures take the palette.
GOOD = "green"
NEUTRAL = "blue"
Steps = list[tuple[Optional[float], str]]
PLAIN: Steps = [(None, NEUTRAL)]
LOSS_RED: Steps = [(None, "red"), (0, GOOD)]


def thresholds(steps: Steps) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    steps: Steps = PLAIN,
    color: dict[str, str] | None = None,
) -> Panel:
    for ref, t in zip("ABCDEFGH", targets):
        t["refId"] = ref
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "color": color or {"mode": "palette-classic"},
                "thresholds": thresholds(steps),
            },
            "overrides": [],
        },
        "options": {},
    }


def fixed(colour: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": colour}


BY_STEPS = {"mode": "thresholds"}


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    width: int = 8,
    threshold: float | None = None,
    above_is_bad: bool = True,
    color: dict[str, str] | None = None,
) -> Panel:
    """`threshold` draws the value at which the matching alert fires as a red line,
    the bad side shaded (above it, or below it when `above_is_bad` is false)."""
    if threshold is None:
        steps = PLAIN
    elif above_is_bad:
        steps = [(None, "transparent"), (threshold, "red")]
    else:
        steps = [(None, "red"), (threshold, "transparent")]
    p = _panel("timeseries", title, description, targets, steps=steps, color=color)
    defaults = p["fieldConfig"]["defaults"]
    defaults["unit"] = unit
    defaults["custom"] = {"fillOpacity": 10, "showPoints": "never"}
    if threshold is not None:
        defaults["custom"]["thresholdsStyle"] = {"mode": "line+area"}
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
    p = _panel("state-timeline", title, description, targets, color=BY_STEPS)
    p["fieldConfig"]["defaults"].update(
        unit="none",
        mappings=[
            {
                "type": "value",
                "options": {
                    str(value): {"text": text, "color": color, "index": i}
                    for i, (value, (text, color)) in enumerate(sorted(states.items()))
                },
            }
        ],
    )
    p["options"] = {"showValue": "auto", "mergeValues": True, "rowHeight": 0.8}
    p["gridPos"] = {"w": width, "h": height}
    return p


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str,
    *,
    steps: Steps = PLAIN,
    color: dict[str, str] | None = None,
    width: int = 4,
) -> Panel:
    """A fleet figure; coloured by `steps` unless a fixed `color` is given."""
    p = _panel("stat", title, description, [target(expr, "")], steps=steps, color=color or BY_STEPS)
    p["fieldConfig"]["defaults"]["unit"] = unit
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "graphMode": "area",
        "colorMode": "value",
        "textMode": "value",
    }
    p["gridPos"] = {"w": width, "h": 5}
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
    links: list[dict[str, Any]] | None = None,
) -> Panel:
    """An instant-query table; `columns` renames each query's value column and gives it a
    unit. Grafana names that column `Value`, or `Value #A`... once several are merged.
    `links` go on the instance column."""
    p = _panel("table", title, description, targets, color=fixed("text"))
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
    if links:
        p["fieldConfig"]["overrides"].append(
            {
                "matcher": {"id": "byName", "options": "instance"},
                "properties": [{"id": "links", "value": links}],
            }
        )
    # One row per series: join the instant queries on their labels, drop the time and
    # metric name columns.
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}},
    ]
    p["options"] = {"showHeader": True}
    if sort_by is not None:
        p["options"]["sortBy"] = [{"displayName": sort_by, "desc": True}]
    p["gridPos"] = {"w": width, "h": 8}
    return p


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


ON = {0: ("no", "text"), 1: ("yes", "green")}


def node_rows(s: Scope) -> Iterator[Panel]:
    yield row("Node: savings ($instance)")
    yield timeseries(
        "KSM saved",
        "pages_sharing * page size: memory KSM saves now.",
        [target(s.node("ksm_saved_bytes"))],
        BYTES,
        color=fixed(GOOD),
    )
    yield timeseries(
        "Savings share of RAM",
        "Memory KSM saves as a share of MemTotal.",
        [target(f"{s.node('ksm_saved_bytes')} / {s.node('ksm_memory_total_bytes')}")],
        PERCENT,
        color=fixed(GOOD),
    )
    yield timeseries(
        "Sharing ratio",
        "pages_sharing / pages_shared: how many more sites share each shared page. "
        "Higher is better.",
        [target(s.node("ksm_sharing_ratio"))],
        TIMES,
    )
    yield timeseries(
        "General profit",
        "Saved memory minus the memory of KSM's rmap_items (kernel 6.4+). Below zero "
        "(red) KSM costs more than it saves; KsmNegativeGeneralProfit fires once settled "
        f"KSM loses more than {s.c.negative_profit_memory_ratio:.2%} of the node's memory "
        f"for {s.c.negative_profit_for}.",
        [target(s.node("ksm_general_profit_bytes"))],
        BYTES,
        threshold=0,
        above_is_bad=False,
    )
    yield timeseries(
        "Pages",
        "shared: KSM pages in use; sharing: further mappings of them (the saving); "
        "unshared: unique pages checked again and again; volatile: changing too fast to "
        "merge.",
        [
            target(s.node(f"ksm_pages_{kind}"), f"{{{{instance}}}} {kind}")
            for kind in ("shared", "sharing", "unshared", "volatile")
        ],
        PAGES,
        width=8,
    )
    yield timeseries(
        "Unshared per sharing page",
        "pages_unshared / pages_sharing. The kernel reads a high ratio as wasted effort; "
        f"the red line is the KsmWastingEffort threshold ({s.c.wasting_ratio:g}), which "
        "fires on settled KSM whose unique pages exceed "
        f"{s.c.wasting_min_memory_ratio:.0%} of the node's memory.",
        [target(f"{s.node('ksm_pages_unshared')} / {s.node('ksm_pages_sharing')}")],
        TIMES,
        threshold=s.c.wasting_ratio,
    )

    yield row("Node: scanning ($instance)")
    yield timeseries(
        "Seconds per full scan",
        "How long ksmd takes to scan all mergeable memory once, averaged over the last "
        f"{FULL_SCAN_WINDOW} (on a large node a full scan takes hours). Empty while no "
        "full scan completed in that time.",
        [target(f"1 / (rate({s.node('ksm_full_scans_total')}[{FULL_SCAN_WINDOW}]) > 0)")],
        SECONDS,
    )
    yield timeseries(
        "Pages scanned and skipped",
        "ksmd's scanning speed; skipped pages come from smart_scan (kernel 6.7+).",
        [
            target(f"rate({s.node(f'ksm_pages_{kind}_total')}[$__rate_interval])", label)
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
        [target(s.node("ksm_sleep_seconds"))],
        SECONDS,
        width=4,
    )
    yield timeseries(
        "Pages per batch",
        "pages_to_scan: pages ksmd scans before it sleeps (set by ksmtuned or the "
        "scan-time advisor).",
        [target(s.node("ksm_pages_to_scan"))],
        PAGES,
        width=4,
    )

    yield row("Node: run state ($instance)")
    yield state_timeline(
        "Run state",
        "KSM's run file: stopped (0), running (1), unmerging (2). The dashboard "
        "annotations mark each change, coloured by its cause: ksmtuned (blue), another "
        "controller or a person (red), unknown (purple), not reported (orange).",
        [
            target(
                f"max by (job, instance) ({s.node('ksm_run_state', RUNNING)})"
                f" + 2 * max by (job, instance) ({s.node('ksm_run_state', UNMERGING)})"
            )
        ],
        {0: ("stopped", "red"), 1: ("running", "green"), 2: ("unmerging", "orange")},
        width=16,
        height=8,
    )
    yield timeseries(
        f"Run-state changes in {s.c.flapping_window}",
        f"From the {FLAPPING_RECORD} recording rule. KsmFlapping fires above "
        f"{s.c.flapping_threshold} (red line).",
        [target(s.node(FLAPPING_RECORD))],
        "short",
        threshold=s.c.flapping_threshold + 1,
    )
    yield table(
        "Memory at the latest edges",
        "Memory when KSM last went into each state, in the terms of the KSM test report's "
        "ksmtuned log: used (MemTotal - MemFree), free (MemFree), available "
        "(MemAvailable).",
        [
            target(f"{EDGE} ({s.node(f'ksm_last_transition_memory_{kind}_bytes')})", instant=True)
            for kind in ("used", "free", "available")
        ]
        + [
            target(
                f"{EDGE} ({s.node('ksm_last_transition_timestamp_seconds')}) * 1000", instant=True
            )
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
        f"is not running while this is below {s.c.pressure_available_ratio:.0%} (red "
        f"line) for {s.c.pressure_for}.",
        [target(s.node(PRESSURE_RECORD))],
        PERCENT,
        threshold=s.c.pressure_available_ratio,
        above_is_bad=False,
    )


def per_vm_rows(s: Scope) -> Iterator[Panel]:
    yield row("Per VM ($instance)")
    vm = "{{instance}} {{vm}}"
    saved = (
        f"{s.node('ksm_process_merging_pages')}"
        f" * on (job, instance) group_left {s.node('ksm_page_size_bytes')}"
    )
    yield timeseries(
        "Saved per VM (top 10)",
        "Merging pages * page size: what KSM saves on each VM as the kernel reckons it "
        "per process (ksm_merging_pages, kernel 5.19+; what its profit starts from). A "
        "merged page counts for every VM that maps it, the KSM page itself included, so "
        "the VMs of a node add up to (pages_shared + pages_sharing) * page size, one page "
        "per KSM page more than KSM saved.",
        [target(f"topk by (job, instance) (10, {saved})", vm)],
        BYTES,
        width=6,
    )
    yield timeseries(
        "KSM profit per VM (lowest 10)",
        "Saved bytes less the memory of the VM's rmap_items (kernel 6.4+), lowest first. "
        "Below zero (red line) KSM costs the VM more memory than it saves; "
        f"KsmVmNegativeProfit fires below -{s.c.vm_negative_profit_bytes / 2**20:g} MiB "
        f"held for {s.c.vm_negative_profit_for}.",
        [target(f"bottomk by (job, instance) (10, {s.node('ksm_process_profit_bytes')})", vm)],
        BYTES,
        threshold=0,
        above_is_bad=False,
        width=6,
    )
    yield timeseries(
        "KSM metadata per VM (top 10)",
        "rmap_items: KSM keeps one (64 bytes on 64-bit kernels) for each scanned page of "
        "the VM (kernel 6.1+), merged or not: the cost side of the profit.",
        [target(f"topk by (job, instance) (10, {s.node('ksm_process_rmap_items')})", vm)],
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
            target(s.node("ksm_process_series_dropped"), "{{instance}} left out"),
            target(
                "sum by (job, instance, reason) "
                f"(increase({s.node('ksm_process_read_errors_total')}[$__rate_interval]))",
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
                s.node("ksm_process_profit_bytes"),
                s.node("ksm_process_rmap_items"),
                s.node("ksm_process_zero_pages"),
                s.node("ksm_process_mergeable"),
                s.node("ksm_process_merge_any"),
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
        "CPU time of the ksmd kernel thread per second, in cores (1 is one CPU busy). "
        "pages_to_scan and sleep_millisecs set it (ksmtuned, or the scan-time advisor "
        f"within advisor_max_cpu). KsmdCpuOverBudget fires above {s.c.ksmd_cpu_budget_cores:g} "
        f"cores (red line) over {s.c.ksmd_cpu_window}, held for {s.c.ksmd_cpu_for}.",
        [target(ksmd_cores(s.c, "$__rate_interval", s.node_matchers))],
        CORES,
        threshold=s.c.ksmd_cpu_budget_cores,
    )
    yield timeseries(
        "Copy-on-write breaks and swap-in copies",
        "cow: writes to a merged page, each making the writer a private copy (cow_ksm, "
        "kernel 5.19+); swap-in: merged pages copied when swapped in (ksm_swpin_copy). A "
        "high copy-on-write rate means KSM merges pages that the guests then write.",
        [
            target(f"rate({s.node('ksm_cow_breaks_total')}[$__rate_interval])", "{{instance}} cow"),
            target(
                f"rate({s.node('ksm_swapin_copies_total')}[$__rate_interval])",
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
        [target(s.node("ksm_settle_duration_seconds"))],
        SECONDS,
    )
    yield state_timeline(
        "Settled",
        "settled: KSM runs and pages_sharing moved by less than 1 % over the last "
        "--settle.full-scans full scans; settling: KSM runs and is still merging (or a VM "
        "started and it merges again); not running: KSM stopped or unmerging.",
        [
            target(
                f"max by (job, instance) ({s.node('ksm_settled')})"
                f" + 2 * max by (job, instance) ({s.node('ksm_run_state', NOT_RUNNING)})"
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
        "it. MemFree alone is drawn too. Free memory going back and forth across the "
        "threshold is the flapping of the KSM test report's ksmtuned log: merging frees "
        "memory, free rises above the threshold, ksmtuned stops KSM; the guests dirty "
        "pages, free falls, ksmtuned starts it again. The annotations mark each edge, "
        "coloured by cause (ksmtuned blue, another controller red, unknown purple).",
        [
            target(s.node("ksmtuned_free_bytes"), "{{instance}} ksmtuned free"),
            target(s.node("ksmtuned_threshold_bytes"), "{{instance}} ksmtuned threshold"),
            target(s.node("ksm_memory_free_bytes"), "{{instance}} MemFree"),
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
                f"{s.node('ksmtuned_committed_bytes')} + {s.node('ksmtuned_threshold_bytes')}",
                "{{instance}} committed + threshold",
            ),
            target(s.node("ksm_memory_total_bytes"), "{{instance}} MemTotal"),
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
            target(s.node("ksmtuned_would_run"), "{{instance}} would run"),
            target(s.node("ksm_run_state", RUNNING), "{{instance}} KSM running"),
            target(s.node("ksmtuned_running"), "{{instance}} ksmtuned alive"),
        ],
        ON,
        height=8,
    )


def fleet_rows(s: Scope) -> Iterator[Panel]:
    cl = s.c.cluster_label
    yield row(f"Fleet ($job, ${cl})")
    yield stat(
        "Saved across the fleet",
        "Memory KSM saves on all nodes of the selected jobs and clusters.",
        f"sum({s.fleet('ksm_saved_bytes')})",
        BYTES,
        color=fixed(GOOD),
    )
    yield stat(
        "Fleet savings share of RAM",
        "Memory KSM saves over the MemTotal of the same nodes.",
        f"sum({s.fleet('ksm_saved_bytes')}) / sum({s.fleet('ksm_memory_total_bytes')})",
        PERCENT,
        color=fixed(GOOD),
    )
    yield stat(
        "Nodes running KSM",
        "Nodes whose KSM run state is running.",
        f"sum({s.fleet('ksm_run_state', RUNNING)})",
        "short",
        color=fixed(NEUTRAL),
    )
    yield stat(
        "Nodes without KSM sysfs",
        "Exporters that cannot read /sys/kernel/mm/ksm (KsmSysfsMissing, information: a "
        "kernel without KSM).",
        f"count({s.fleet('ksm_up')} == 0) or vector(0)",
        "short",
        steps=[(None, GOOD), (1, NEUTRAL)],
    )
    yield stat(
        "Fleet general profit",
        "Sum of general_profit over the nodes that report it (kernel 6.4+): red when KSM "
        "costs the fleet more memory than it saves.",
        f"sum({s.fleet('ksm_general_profit_bytes')})",
        BYTES,
        steps=LOSS_RED,
    )
    yield stat(
        "ksmd CPU, all nodes",
        "CPU used by ksmd on all selected nodes, in cores.",
        f"sum({ksmd_cores(s.c, '$__rate_interval', s.fleet_matchers)})",
        CORES,
        color=fixed(NEUTRAL),
    )
    yield timeseries(
        "Saved by cluster",
        f"Memory KSM saves per job and {cl}, from the {SAVED_RECORD} recording rule.",
        [target(s.fleet(SAVED_RECORD), f"{{{{job}}}} {{{{{cl}}}}}")],
        BYTES,
        width=12,
    )
    bars = _panel(
        "bargauge",
        "Top nodes by saved memory",
        "The ten nodes where KSM saves the most now.",
        [target(f"topk(10, {s.fleet('ksm_saved_bytes')})", "{{instance}}", instant=True)],
        color=fixed(GOOD),
    )
    bars["targets"][0]["format"] = "time_series"
    bars["fieldConfig"]["defaults"]["unit"] = BYTES
    bars["options"] = {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }
    bars["gridPos"] = {"w": 12, "h": 8}
    yield bars
    per_node = "max by (job, instance)"
    yield table(
        "Nodes",
        "One row per node: saved memory, its share of the node's RAM, general profit, "
        f"run-state changes in {s.c.flapping_window} and whether KSM runs. Click a node "
        "to open its node view.",
        [
            target(f"{per_node} ({expr})", instant=True)
            for expr in (
                s.fleet("ksm_saved_bytes"),
                f"{s.fleet('ksm_saved_bytes')} / {s.fleet('ksm_memory_total_bytes')}",
                s.fleet("ksm_general_profit_bytes"),
                s.fleet(FLAPPING_RECORD),
                s.fleet("ksm_run_state", RUNNING),
            )
        ],
        "short",
        {
            "A": ("Saved", BYTES),
            "B": ("Share of RAM", PERCENT),
            "C": ("General profit", BYTES),
            "D": (f"Changes in {s.c.flapping_window}", "short"),
            "E": ("Running", "bool_yes_no"),
        },
        width=24,
        sort_by="Saved",
        links=[
            {
                "title": "Node view of ${__value.raw}",
                "url": "/d/ksm-exporter/ksm?${__url_time_range}&${datasource:queryparam}"
                "&var-instance=${__value.raw}",
            }
        ],
    )
    yield table(
        "Nodes whose KSM flaps",
        f"Run-state changes in the last {s.c.flapping_window} per node, most first "
        f"({FLAPPING_RECORD}); KsmFlapping fires above {s.c.flapping_threshold}.",
        [target(f"sort_desc({s.fleet(FLAPPING_RECORD)} > 0)", instant=True)],
        "short",
        {"A": (f"Changes in {s.c.flapping_window}", "short")},
        sort_by=f"Changes in {s.c.flapping_window}",
        width=8,
    )
    yield table(
        "Nodes where KSM is stopped under memory pressure",
        "KSM stopped or unmerging while less than "
        f"{s.c.pressure_available_ratio:.0%} of memory is available now (MemAvailable, "
        "or MemFree before 3.14, over MemTotal), on nodes where KSM is meant to run: the "
        f"expression of KsmStoppedUnderMemoryPressure, which fires after {s.c.pressure_for}.",
        [target(stopped_under_pressure(s.c, s.fleet_matchers), instant=True)],
        PERCENT,
        {"A": ("Available now", PERCENT)},
        width=8,
    )
    yield table(
        "VMs where KSM costs more than it saves",
        "VMs whose KSM profit (saved bytes less the memory of their rmap_items, kernel "
        "6.4+) is negative now, lowest first. KsmVmNegativeProfit fires below "
        f"-{s.c.vm_negative_profit_bytes / 2**20:g} MiB held for "
        f"{s.c.vm_negative_profit_for}.",
        [target(f"sort({s.fleet('ksm_process_profit_bytes')} < 0)", instant=True)],
        BYTES,
        {"A": ("Profit", BYTES)},
        width=8,
    )


def health_rows(s: Scope) -> Iterator[Panel]:
    cl = s.c.cluster_label
    yield row(f"Exporter health ($job, ${cl})")
    yield stat(
        "Targets down",
        "ksm-exporter targets Prometheus cannot scrape (KsmExporterDown).",
        f"count({s.fleet('up')} == 0) or vector(0)",
        "short",
        steps=[(None, GOOD), (1, "red")],
    )
    yield stat(
        "VMs left out",
        "Per-VM series the exporters dropped beyond --collector.process.max, all nodes.",
        f"sum({s.fleet('ksm_process_series_dropped')})",
        "short",
        steps=[(None, GOOD), (1, "orange")],
    )
    yield timeseries(
        "Read errors",
        "Files the exporters could not read or parse, per node and file: a broken file "
        "is skipped and counted, its series absent.",
        [
            target(
                "sum by (job, instance, file) "
                f"(increase({s.fleet('ksm_exporter_read_errors_total')}[$__rate_interval]))",
                "{{instance}} {{file}}",
            )
        ],
        "short",
    )
    yield state_timeline(
        "Collectors",
        "Per collector, whether its last scrape succeeded on every selected node "
        "(ksm_scrape_collector_success, lowest over the nodes): a failed collector's "
        "series are absent, never 0.",
        [
            target(
                f"min by (collector) ({s.fleet('ksm_scrape_collector_success')})",
                "{{collector}}",
            )
        ],
        {0: ("failed", "red"), 1: ("ok", "green")},
        width=8,
        height=8,
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


def variable(
    name: str, label: str, query: str, *, multi: bool = True, all_value: str = ".+"
) -> dict[str, Any]:
    v: dict[str, Any] = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": query,
        "refresh": 2,  # on time range change: nodes come and go
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "sort": 1,
    }
    if multi:
        v["allValue"] = all_value
        # All selected when the dashboard opens: fleet rows cover everything.
        v["current"] = {"text": "All", "value": "$__all"}
    return v


# The edges of the run state as annotations, one colour per cause (the `cause` label of
# ksm_run_transitions_total); exporters without that label show as "not reported".
CAUSES = (
    ("ksmtuned", 'cause="ksmtuned"', "blue"),
    ("another controller", 'cause="other"', "red"),
    ("cause unknown", 'cause="unknown"', "purple"),
    ("cause not reported", 'cause=""', "orange"),
)


def edge_annotations(s: Scope) -> list[dict[str, Any]]:
    return [
        {
            "name": f"KSM run-state changes: {name}",
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": colour,
            # A change shows for two one-minute steps, merged into one region.
            "expr": f"increase({s.node('ksm_run_transitions_total', matcher)}[2m]) > 0",
            "step": "1m",
            "titleFormat": f"KSM {{{{state}}}} ({name})",
            "textFormat": "{{instance}}",
            "tagKeys": "instance,state,cause",
        }
        for name, matcher, colour in CAUSES
    ]


def build_dashboard(c: Config) -> dict[str, Any]:
    s = Scope(c)
    cl = c.cluster_label
    sel = c.selector
    return {
        "__inputs": [
            {
                "name": DS_INPUT,
                "label": "Prometheus",
                "description": "The Prometheus that scrapes ksm-exporter and has its rules.",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "uid": "ksm-exporter",
        "title": "KSM (Kernel Same-page Merging)",
        "description": "ksm-exporter: KSM savings, cost and flapping across the fleet and "
        "per node.",
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
                    # The data source picked in the import dialog.
                    "current": {"text": f"${{{DS_INPUT}}}", "value": f"${{{DS_INPUT}}}"},
                },
                variable("job", "Job", f"label_values(ksm_up{{{sel}}}, job)"),
                # Nodes without the label match too (".*" rather than ".+").
                variable(
                    cl,
                    cl.capitalize(),
                    f'label_values(ksm_up{{{sel}, job=~"$job"}}, {cl})',
                    all_value=".*",
                ),
                # One node by default: node rows are for looking at a node.
                variable(
                    "instance",
                    "Node",
                    f'label_values(ksm_up{{{sel}, job=~"$job", {cl}=~"${cl}"}}, instance)',
                    multi=False,
                ),
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
                *edge_annotations(s),
            ]
        },
        "panels": layout([*fleet_rows(s), *health_rows(s), *node_rows(s), *per_vm_rows(s)]),
    }


def render(c: Config) -> str:
    return json.dumps(build_dashboard(c), indent=2, ensure_ascii=False) + "\n"
