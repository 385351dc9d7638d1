#!/usr/bin/env python3
"""Generates rules/ksm-exporter.rules.yml: recording rules and alerts for ksm-exporter.

The committed YAML is this script's output with the defaults (tests/test_rules.py keeps
them in sync). Thresholds and windows are options, because a range selector such as [1h]
cannot come from a metric; for another flapping threshold run for example

    python3 rules/generate_rules.py --flapping-threshold 6 --flapping-window 2h > ksm.rules.yml

Stdlib only: it runs on a Prometheus server without this project installed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Union

RULES_FILE = Path(__file__).parent / "ksm-exporter.rules.yml"
RUNBOOK = "docs/dashboard-and-alerts.md"

# Recording rule names, shared with the dashboard generator (grafana/generate_dashboard.py).
FLAPPING_RECORD = "instance:ksm_run_transitions:increase_flapping_window"
PRESSURE_RECORD = "instance:ksm_memory_available:ratio"
SAVED_RECORD = "job:ksm_saved_bytes:sum"

Yaml = Union[str, int, float, list["Yaml"], dict[str, "Yaml"]]


@dataclass(frozen=True)
class Params:
    """Every knob of the rules; the defaults are what the committed file uses."""

    # The seed's ksmtuned switched KSM every 1 to 4 minutes (5 changes in 40 minutes on
    # day one, 8 in 40 minutes on day two). More than 4 changes in an hour is more than
    # two stop/start cycles: a node whose free memory sits on ksmtuned's threshold.
    flapping_threshold: int = 4
    flapping_window: str = "1h"
    flapping_for: str = "0s"
    # ksmtuned's KSM_THRES_COEF default: it wants KSM running once less than 20 % of
    # memory is uncommitted, so KSM stopped below that is working against ksmtuned's
    # own rule (or ksmtuned is gone).
    pressure_available_ratio: float = 0.2
    # One ksmtuned cycle is 60 s; give it a few to start KSM again before alerting.
    pressure_for: str = "10m"
    # Kernel docs: a high pages_unshared / pages_sharing ratio indicates wasted effort.
    # An order of magnitude, held for an hour so a first pass over new VMs is not counted.
    wasting_ratio: float = 10.0
    wasting_for: str = "1h"
    negative_profit_for: str = "30m"
    # A VM whose rmap_items outweigh its merged pages by more than this: 64 MiB is a
    # million rmap_items (64 bytes each on 64-bit kernels), the metadata of 4 GiB of
    # guest memory that merges nothing.
    # Held for an hour: KSM builds the rmap_items of a new VM before it merges its pages.
    vm_negative_profit_bytes: int = 64 * 1024 * 1024
    vm_negative_profit_for: str = "1h"
    missing_for: str = "5m"
    exporter_job: str = "ksm"
    exporter_down_for: str = "5m"


def recording_rules(p: Params) -> list[dict[str, Yaml]]:
    return [
        {
            "record": FLAPPING_RECORD,
            # Rounded because increase() extrapolates to the window's edges and a count
            # of 4 must not read as 4.07 against a threshold of 4.
            "expr": (
                "round(\n"
                "  sum by (job, instance) (\n"
                f"    increase(ksm_run_transitions_total[{p.flapping_window}])\n"
                "  )\n"
                ")\n"
            ),
        },
        {
            "record": PRESSURE_RECORD,
            # MemAvailable over MemTotal now; MemFree on kernels before 3.14, which have
            # no MemAvailable (the `or` keeps the left side wherever it exists).
            "expr": (
                "(\n"
                "    ksm_memory_available_bytes\n"
                "  or\n"
                "    ksm_memory_free_bytes\n"
                ")\n"
                "/\n"
                "  ksm_memory_total_bytes\n"
            ),
        },
        {"record": SAVED_RECORD, "expr": "sum by (job) (ksm_saved_bytes)\n"},
    ]


def _selector(metric: str, matchers: str, extra: str = "") -> str:
    inside = ", ".join(m for m in (matchers, extra) if m)
    return f"{metric}{{{inside}}}" if inside else metric


def stopped_under_pressure(p: Params, matchers: str = "") -> str:
    """KSM not running while less than the pressure ratio of memory is available now:
    the available ratio, labelled with the state KSM is in. `matchers` (e.g. the
    dashboard's job filter) go into every selector."""
    running = _selector("ksm_run_state", matchers, 'state!="running"')
    return (
        f"({_selector(PRESSURE_RECORD, matchers)} < {p.pressure_available_ratio})\n"
        "* on (job, instance) group_left (state)\n"
        f"({running} == 1)\n"
    )


def _alert(
    name: str, expr: str, duration: str, severity: str, summary: str, description: str
) -> dict[str, Yaml]:
    rule: dict[str, Yaml] = {"alert": name, "expr": expr}
    if duration not in ("0", "0s", "0m"):
        rule["for"] = duration
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook": f"{RUNBOOK}#{name.lower()}",
    }
    return rule


def alerting_rules(p: Params) -> list[dict[str, Yaml]]:
    pct = f"{p.pressure_available_ratio:.0%}"
    return [
        _alert(
            "KsmFlapping",
            f"{FLAPPING_RECORD} > {p.flapping_threshold}\n",
            p.flapping_for,
            "warning",
            "KSM on {{ $labels.instance }} changed state {{ $value }} times in "
            f"{p.flapping_window}",
            "The KSM run state changed {{ $value }} times within "
            f"{p.flapping_window} (threshold {p.flapping_threshold}). Each stop leaves "
            "merged pages to be broken up on write and each start rescans from scratch, "
            "so KSM pays its CPU cost without keeping its savings. Usually ksmtuned with "
            "free memory sitting on its threshold.",
        ),
        _alert(
            "KsmStoppedUnderMemoryPressure",
            stopped_under_pressure(p),
            p.pressure_for,
            "warning",
            "KSM on {{ $labels.instance }} is {{ $labels.state }} although memory is short",
            "KSM is {{ $labels.state }} while only {{ $value | humanizePercentage }} of "
            f"memory is available (below {pct}). Merged pages are no longer kept up to "
            "date while the node needs them most.",
        ),
        _alert(
            "KsmSysfsMissing",
            "ksm_up == 0\n",
            p.missing_for,
            "warning",
            "KSM sysfs is missing on {{ $labels.instance }}",
            "The exporter cannot read /sys/kernel/mm/ksm: the kernel lacks CONFIG_KSM, "
            "or --path.sysfs does not point at the host's /sys (containers).",
        ),
        _alert(
            "KsmExporterDown",
            f'up{{job="{p.exporter_job}"}} == 0\n',
            p.exporter_down_for,
            "warning",
            "ksm-exporter on {{ $labels.instance }} is down",
            "Prometheus cannot scrape ksm-exporter, so KSM on this node is not watched "
            "and none of the other KSM alerts can fire for it.",
        ),
        _alert(
            "KsmWastingEffort",
            (
                f"ksm_pages_unshared / ksm_pages_sharing > {p.wasting_ratio:g}\n"
                'and on (job, instance) (ksm_run_state{state="running"} == 1)\n'
            ),
            p.wasting_for,
            "info",
            "KSM on {{ $labels.instance }} scans {{ $value | humanize }} unique pages "
            "per page it saves",
            "pages_unshared is more than "
            f"{p.wasting_ratio:g} times pages_sharing. The kernel documentation reads a "
            "high pages_unshared to pages_sharing ratio as wasted effort: ksmd keeps "
            "checking pages that never merge.",
        ),
        _alert(
            "KsmNegativeGeneralProfit",
            "ksm_general_profit_bytes < 0\n",
            p.negative_profit_for,
            "warning",
            "KSM on {{ $labels.instance }} costs more memory than it saves",
            "general_profit is {{ $value | humanize1024 }}B: the rmap_items KSM "
            "keeps for the pages it scans take more memory than merging saves.",
        ),
        _alert(
            "KsmVmNegativeProfit",
            f"ksm_process_profit_bytes < -{p.vm_negative_profit_bytes}\n",
            p.vm_negative_profit_for,
            "info",
            "KSM costs more memory than it saves on VM {{ $labels.vm }} of {{ $labels.instance }}",
            "KSM's profit on VM {{ $labels.vm }} (pid {{ $labels.pid }}) is "
            "{{ $value | humanize1024 }}B (alert below "
            f"-{_mib(p.vm_negative_profit_bytes)}): the rmap_items KSM keeps for the "
            "VM's scanned pages take more memory than merging saves it, and ksmd "
            "spends CPU on pages that do not merge.",
        ),
    ]


def _mib(n: int) -> str:
    return f"{n / 2**20:g}MiB"


def build_rules(p: Params) -> dict[str, Yaml]:
    # One group: rules in a group run in order, so the alerts see this evaluation's
    # recording rules. Across groups they could see the previous one (promtool picks the
    # group order at random, and a real server runs groups independently).
    return {"groups": [{"name": "ksm-exporter", "rules": recording_rules(p) + alerting_rules(p)}]}


_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _scalar(value: str | int | float, indent: str) -> str:
    if isinstance(value, (int, float)):
        return repr(value)
    if "\n" in value and not value[:1].isspace():
        # A literal block; its first line sets the indentation, hence no leading blank.
        body = "".join(f"{indent}  {line}\n" if line else "\n" for line in value.splitlines())
        return ("|\n" if value.endswith("\n") else "|-\n") + body.rstrip("\n")
    if (
        _PLAIN.fullmatch(value)
        and not _NUMBER.fullmatch(value)
        and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off")
    ):
        return value
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value, ensure_ascii=False)


def to_yaml(value: Yaml, indent: str = "") -> str:
    """Block-style YAML for the str/number/list/dict trees built above."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                lines.append(f"{indent}{key}:\n{to_yaml(item, indent + '  ')}")
            else:
                lines.append(f"{indent}{key}: {_scalar(item, indent)}\n")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                # The first key goes on the dash line; the rest align under it.
                nested = to_yaml(item, indent + "  ")
                lines.append(f"{indent}- {nested[len(indent) + 2 :]}")
            else:
                lines.append(f"{indent}- {_scalar(item, indent)}\n")
    else:
        raise TypeError(f"not a YAML tree: {value!r}")
    return "".join(lines)


def render(p: Params) -> str:
    return (
        "# Generated by rules/generate_rules.py: edit that and rerun it.\n"
        "# Options and runbook: docs/dashboard-and-alerts.md\n" + to_yaml(build_rules(p))
    )


def main(argv: list[str] | None = None) -> int:
    defaults = Params()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Params):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(getattr(defaults, f.name)),
            default=getattr(defaults, f.name),
            help=f"default {getattr(defaults, f.name)}",
        )
    parser.add_argument("-o", "--output", help="write here instead of standard output")
    args = vars(parser.parse_args(argv))
    output = args.pop("output")
    text = render(Params(**args))
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
