"""Recording rules and alerts for ksm-exporter, from one configuration (`Config`).

The dashboard generator (grafana/generate_dashboard.py) reads the same `Config`, so the
thresholds it draws are the ones the alerts use. mixin/generate.py writes both, and the
monitoring mixin's files, for the defaults or for an operator's JSON configuration:

    python3 mixin/generate.py --config my-ksm.json --output-dir out/

Stdlib only: it runs on a Prometheus server without this project installed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

RULES_FILE = Path(__file__).parent / "ksm-exporter.rules.yml"

# Recording rule names, shared with the dashboard generator.
FLAPPING_RECORD = "instance:ksm_run_transitions:increase_flapping_window"
FLAPPING_CAUSE_RECORD = "instance_cause:ksm_run_transitions:increase_flapping_window"
PRESSURE_RECORD = "instance:ksm_memory_available:ratio"
SAVED_RECORD = "job:ksm_saved_bytes:sum"

Yaml = Union[str, int, float, list["Yaml"], dict[str, "Yaml"]]

SEVERITIES = ("critical", "warning", "info")
DEFAULT_SEVERITIES = {
    "KsmFlapping": "warning",
    "KsmStoppedUnderMemoryPressure": "warning",
    "KsmSavingsCollapsing": "critical",
    "KsmSysfsMissing": "info",
    "KsmExporterDown": "warning",
    "KsmWastingEffort": "info",
    "KsmNegativeGeneralProfit": "warning",
    "KsmVmNegativeProfit": "info",
    "KsmdCpuOverBudget": "warning",
}


class ConfigError(ValueError):
    """A configuration file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Config:
    """Every knob of the rules and the dashboard; the defaults are what the committed
    files use. Durations are Prometheus durations ("90s", "1h"); ratios are fractions."""

    # PromQL matchers that pick ksm-exporter's targets, in every expression.
    selector: str = 'job="ksm"'
    # The target label that groups nodes (file_sd's `cell` in examples/targets): the
    # dashboard's second variable and the fleet aggregation.
    cluster_label: str = "cell"
    # Absolute URL of each alert's runbook; {anchor} is the alert name in lower case.
    runbook_url: str = (
        "https://github.com/ksm-exporter/ksm-exporter/blob/main/docs/runbook.md#{anchor}"
    )
    severities: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SEVERITIES))
    # ksmtuned in the report switched KSM every 1 to 4 minutes (5 changes in 40 minutes on
    # day one, 8 on day two). More than 4 changes in an hour is more than two stop/start
    # cycles: a node whose free memory sits on ksmtuned's threshold.
    flapping_threshold: int = 4
    flapping_window: str = "1h"
    flapping_for: str = "0s"
    # One episode, one page: the alert stays firing until the node has not crossed the
    # threshold for this long (a node changing at about the threshold rate would
    # otherwise fire and resolve every cycle).
    flapping_keep_firing_for: str = "1h"
    # ksmtuned's KSM_THRES_COEF default: it wants KSM running once less than 20 % of
    # memory is free, so KSM stopped below that works against ksmtuned's own rule.
    pressure_available_ratio: float = 0.2
    # One ksmtuned cycle is 60 s; give it a few to start KSM again before alerting.
    pressure_for: str = "10m"
    # KSM is meant to run on a node where it ran within this long (or ksmtuned runs or
    # is configured there); elsewhere it is off on purpose and never alerts.
    pressure_ran_within: str = "1d"
    # Savings collapsing: saved memory fell by this share of MemTotal below its maximum
    # within the window, while available memory is below pressure_available_ratio.
    collapse_memory_ratio: float = 0.05
    collapse_window: str = "1h"
    collapse_for: str = "5m"
    # Kernel docs: a high pages_unshared / pages_sharing ratio indicates wasted effort.
    # An order of magnitude, on settled KSM, and only where the unique pages ksmd keeps
    # checking are a noticeable share of the node's memory.
    wasting_ratio: float = 10.0
    wasting_min_memory_ratio: float = 0.05
    wasting_for: str = "1h"
    # general_profit below this share of MemTotal, on settled KSM: 0.1 % of a 32 GiB
    # node is 32 MiB of rmap_items (half a million of them) that merge nothing.
    negative_profit_memory_ratio: float = 0.001
    negative_profit_for: str = "30m"
    # A VM whose rmap_items outweigh its merged pages by more than this: 64 MiB is a
    # million rmap_items (64 bytes each on 64-bit kernels), the metadata of 4 GiB of
    # guest memory that merges nothing. Held for an hour: KSM builds the rmap_items of a
    # new VM before it merges its pages.
    vm_negative_profit_bytes: int = 64 * 1024 * 1024
    vm_negative_profit_for: str = "1h"
    # ksmd's CPU budget in cores (CPU seconds per second), averaged over the window.
    ksmd_cpu_budget_cores: float = 0.5
    ksmd_cpu_window: str = "10m"
    ksmd_cpu_for: str = "30m"
    missing_for: str = "5m"
    exporter_down_for: str = "5m"

    def runbook(self, alert: str) -> str:
        return self.runbook_url.format(anchor=alert.lower())

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        """Defaults overridden by `data`; severities merge with the defaults."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            default = getattr(cls(), name)
            if isinstance(default, dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{name}: expected an object, got {value!r}")
                value = {**default, **value}
            elif isinstance(default, float) and isinstance(value, int):
                value = float(value)
            elif not isinstance(value, type(default)) or isinstance(value, bool):
                raise ConfigError(f"{name}: expected {type(default).__name__}, got {value!r}")
            values[name] = value
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        if path is None:
            return cls()
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_json(data)

    def check(self) -> None:
        for name, severity in self.severities.items():
            if name not in DEFAULT_SEVERITIES:
                raise ConfigError(f"severities: no alert named {name}")
            if severity not in SEVERITIES:
                raise ConfigError(f"severities.{name}: one of {', '.join(SEVERITIES)}")
        if "{anchor}" not in self.runbook_url or not re.match(r"https?://", self.runbook_url):
            raise ConfigError("runbook_url: an absolute http(s) URL containing {anchor}")
        for f in fields(self):
            if f.name.endswith(("_for", "_window", "_within")) and not _DURATION.fullmatch(
                getattr(self, f.name)
            ):
                raise ConfigError(f"{f.name}: not a Prometheus duration")


_DURATION = re.compile(r"([0-9]+(ms|[smhdwy]))+")


RUNNING = 'state="running"'
NOT_RUNNING = 'state!="running"'


def selector(metric: str, *matchers: str) -> str:
    inside = ", ".join(m for m in matchers if m)
    return f"{metric}{{{inside}}}" if inside else metric


def available_ratio(c: Config, matchers: str = "") -> str:
    """MemAvailable over MemTotal now; MemFree on kernels before 3.14, which have no
    MemAvailable (the `or` keeps the left side wherever it exists)."""
    s = ", ".join(m for m in (c.selector, matchers) if m)
    return (
        f"(\n    {selector('ksm_memory_available_bytes', s)}\n  or\n"
        f"    {selector('ksm_memory_free_bytes', s)}\n)\n"
        f"/\n  {selector('ksm_memory_total_bytes', s)}\n"
    )


def transitions_increase(c: Config, without: str, matchers: str = "") -> str:
    # Rounded because increase() extrapolates to the window's edges and a count of 4
    # must not read as 4.07 against a threshold of 4. `without` keeps every target label
    # (cell, rack, file_sd's) and works whether or not the exporter adds `cause`.
    s = selector("ksm_run_transitions_total", c.selector, matchers)
    return f"round(\n  sum without ({without}) (\n    increase({s}[{c.flapping_window}])\n  )\n)\n"


def flapping(c: Config, matchers: str = "") -> str:
    return transitions_increase(c, "state, cause", matchers)


def stopped_under_pressure(c: Config, matchers: str = "") -> str:
    """KSM not running while less than the pressure ratio of memory is available, on a
    node where KSM is meant to run: it ran within pressure_ran_within, or ksmtuned runs
    or is configured (ksmtuned_threshold_bytes exists). The value is the available
    ratio; the labels are the target's, plus the state KSM is in."""
    s = ", ".join(m for m in (c.selector, matchers) if m)
    return (
        f"(\n  (\n{_indent(available_ratio(c, matchers), 4)}  )\n"
        f"  < {c.pressure_available_ratio}\n)\n"
        "* on (job, instance) group_left (state)\n"
        f"  ({selector('ksm_run_state', s, NOT_RUNNING)} == 1)\n"
        "and on (job, instance)\n"
        "  (\n"
        f"      max_over_time({selector('ksm_run_state', s, RUNNING)}"
        f"[{c.pressure_ran_within}]) == 1\n"
        f"    or\n      {selector('ksmtuned_running', s)} == 1\n"
        f"    or\n      {selector('ksmtuned_threshold_bytes', s)}\n"
        "  )\n"
    )


def _indent(text: str, n: int) -> str:
    return "".join(" " * n + line + "\n" for line in text.splitlines())


def savings_collapsing(c: Config, matchers: str = "") -> str:
    """The share of MemTotal that KSM's savings lost against their maximum within the
    collapse window, where more than collapse_memory_ratio was lost while available
    memory is below the pressure ratio."""
    s = ", ".join(m for m in (c.selector, matchers) if m)
    saved = selector("ksm_saved_bytes", s)
    return (
        f"(\n  max_over_time({saved}[{c.collapse_window}])\n  -\n  {saved}\n)\n"
        f"/\n  {selector('ksm_memory_total_bytes', s)}\n"
        f"> {c.collapse_memory_ratio}\n"
        f"and\n(\n{_indent(available_ratio(c, matchers), 2)})\n< {c.pressure_available_ratio}\n"
    )


def ksmd_cores(c: Config, window: str, matchers: str = "") -> str:
    s = ", ".join(m for m in (c.selector, matchers) if m)
    return f"rate({selector('ksm_ksmd_cpu_seconds_total', s)}[{window}])"


def recording_rules(c: Config) -> list[dict[str, Yaml]]:
    return [
        {"record": FLAPPING_RECORD, "expr": flapping(c)},
        # The same by cause (ksmtuned, other, unknown; one series per node where the
        # exporter does not say): which controller flapped.
        {"record": FLAPPING_CAUSE_RECORD, "expr": transitions_increase(c, "state")},
        {"record": PRESSURE_RECORD, "expr": available_ratio(c)},
        {
            "record": SAVED_RECORD,
            "expr": f"sum by (job, {c.cluster_label}) "
            f"({selector('ksm_saved_bytes', c.selector)})\n",
        },
    ]


def _zero(duration: str) -> bool:
    return re.fullmatch(r"(0(ms|[smhdwy]))+|0", duration) is not None


def _alert(
    c: Config,
    name: str,
    expr: str,
    duration: str,
    summary: str,
    description: str,
    keep_firing_for: str = "0s",
) -> dict[str, Yaml]:
    rule: dict[str, Yaml] = {"alert": name, "expr": expr}
    if not _zero(duration):
        rule["for"] = duration
    if not _zero(keep_firing_for):
        rule["keep_firing_for"] = keep_firing_for
    rule["labels"] = {"severity": c.severities[name]}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": c.runbook(name),
    }
    return rule


def _mib(n: float) -> str:
    return f"{n / 2**20:g} MiB"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def top_cause(c: Config) -> str:
    """A template that names the cause of most of the node's changes in the window
    (the label `cause` of ksm_run_transitions_total); exporters without it say so."""
    query = (
        "topk(1, sum without (state) (increase(ksm_run_transitions_total"
        f"{{{c.selector}, instance=%q}}[{c.flapping_window}])))"
    )
    return (
        f"{{{{ with query (printf `{query}` $labels.instance) }}}}"
        '{{ with index . 0 }}{{ or .Labels.cause "not reported by this exporter" }}'
        "{{ end }}{{ end }}"
    )


def alerting_rules(c: Config) -> list[dict[str, Yaml]]:
    sel = c.selector
    return [
        _alert(
            c,
            "KsmFlapping",
            f"{flapping(c)}> {c.flapping_threshold}\n",
            c.flapping_for,
            "KSM keeps starting and stopping.",
            "KSM on {{ $labels.instance }} changed state {{ $value }} times in "
            f"{c.flapping_window} (alert above {c.flapping_threshold}). Cause of most "
            f"changes: {top_cause(c)}.",
            c.flapping_keep_firing_for,
        ),
        _alert(
            c,
            "KsmStoppedUnderMemoryPressure",
            stopped_under_pressure(c),
            c.pressure_for,
            "KSM is not running although memory is short.",
            "KSM on {{ $labels.instance }} is {{ $labels.state }} while "
            "{{ $value | humanizePercentage }} of memory is available (alert below "
            f"{_pct(c.pressure_available_ratio)}).",
        ),
        _alert(
            c,
            "KsmSavingsCollapsing",
            savings_collapsing(c),
            c.collapse_for,
            "KSM's savings are collapsing while memory is short.",
            "KSM on {{ $labels.instance }} saves {{ $value | humanizePercentage }} of "
            f"the node's memory less than it did within {c.collapse_window} (alert above "
            f"{_pct(c.collapse_memory_ratio)}), while less than "
            f"{_pct(c.pressure_available_ratio)} of memory is available.",
        ),
        _alert(
            c,
            "KsmSysfsMissing",
            f"{selector('ksm_up', sel)} == 0\n",
            c.missing_for,
            "The kernel offers no KSM to the exporter.",
            "ksm-exporter on {{ $labels.instance }} cannot read /sys/kernel/mm/ksm "
            "(ksm_up is {{ $value }}): a kernel without CONFIG_KSM, or --path.sysfs not "
            "pointing at the host's /sys.",
        ),
        _alert(
            c,
            "KsmExporterDown",
            f"{selector('up', sel)} == 0\n",
            c.exporter_down_for,
            "ksm-exporter cannot be scraped.",
            "Prometheus cannot scrape ksm-exporter on {{ $labels.instance }} (up is "
            "{{ $value }}): KSM on this node is not watched and no other KSM alert can "
            "fire for it.",
        ),
        _alert(
            c,
            "KsmWastingEffort",
            (
                f"{selector('ksm_pages_unshared', sel)}"
                f" * {selector('ksm_page_size_bytes', sel)}\n"
                f"> {c.wasting_min_memory_ratio} * {selector('ksm_memory_total_bytes', sel)}\n"
                f"and {selector('ksm_pages_unshared', sel)}"
                f" > {c.wasting_ratio:g} * {selector('ksm_pages_sharing', sel)}\n"
                f"and {selector('ksm_settled', sel)} == 1\n"
            ),
            c.wasting_for,
            "KSM keeps scanning pages that do not merge.",
            "Settled KSM on {{ $labels.instance }} keeps checking "
            "{{ $value | humanize1024 }}B of unique pages, more than "
            f"{c.wasting_ratio:g} times what it shares and more than "
            f"{_pct(c.wasting_min_memory_ratio)} of the node's memory.",
        ),
        _alert(
            c,
            "KsmNegativeGeneralProfit",
            (
                f"{selector('ksm_general_profit_bytes', sel)}\n"
                f"< -{c.negative_profit_memory_ratio} * "
                f"{selector('ksm_memory_total_bytes', sel)}\n"
                f"and {selector('ksm_settled', sel)} == 1\n"
            ),
            c.negative_profit_for,
            "KSM costs more memory than it saves.",
            "Settled KSM on {{ $labels.instance }} has a general profit of "
            "{{ $value | humanize1024 }}B (alert below "
            f"-{_pct(c.negative_profit_memory_ratio)} of the node's memory): its "
            "rmap_items take more memory than merging saves.",
        ),
        _alert(
            c,
            "KsmVmNegativeProfit",
            f"{selector('ksm_process_profit_bytes', sel)} < -{c.vm_negative_profit_bytes}\n",
            c.vm_negative_profit_for,
            "KSM costs a VM more memory than it saves.",
            "KSM's profit on VM {{ $labels.vm }} (pid {{ $labels.pid }}) of "
            "{{ $labels.instance }} is {{ $value | humanize1024 }}B (alert below "
            f"-{_mib(c.vm_negative_profit_bytes)}).",
        ),
        _alert(
            c,
            "KsmdCpuOverBudget",
            f"{ksmd_cores(c, c.ksmd_cpu_window)} > {c.ksmd_cpu_budget_cores:g}\n",
            c.ksmd_cpu_for,
            "ksmd uses more CPU than its budget.",
            'ksmd on {{ $labels.instance }} uses {{ $value | printf "%.2f" }} cores over '
            f"{c.ksmd_cpu_window} (budget {c.ksmd_cpu_budget_cores:g}).",
        ),
    ]


RECORDING_GROUP = "ksm-exporter.rules"
ALERTING_GROUP = "ksm-exporter.alerts"


def recording_groups(c: Config) -> dict[str, Yaml]:
    return {"groups": [{"name": RECORDING_GROUP, "rules": recording_rules(c)}]}


def alerting_groups(c: Config) -> dict[str, Yaml]:
    # The alerts compute what they judge themselves rather than read the recording rules:
    # another group may run before or after this one (promtool and mixin tooling write
    # the two groups to separate files).
    return {"groups": [{"name": ALERTING_GROUP, "rules": alerting_rules(c)}]}


def build_rules(c: Config) -> dict[str, Yaml]:
    return {"groups": recording_groups(c)["groups"] + alerting_groups(c)["groups"]}


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


def render(c: Config) -> str:
    return (
        "# Generated by mixin/generate.py from its configuration: rerun it, do not edit.\n"
        "# Configuration, alerts and runbook: docs/dashboard-and-alerts.md\n"
        + to_yaml(build_rules(c))
    )
