"""The ksmtuned collector: the inputs of ksmtuned's decision to start or stop KSM.

Its figures come from the process table (is ksmtuned alive, which script it runs, the
memory of the guests that script counts), meminfo and ksmtuned.conf. When /proc hides
other users' processes, ksmtuned_running, ksmtuned_committed_bytes and ksmtuned_would_run
are left out: "no ksmtuned and no qemu among the processes we can see" says nothing about
the node. Committed memory is counted by the rule of the running ksmtuned's own script
(ksmtuned_committed_rule_info says which): none without a running ksmtuned, none when its
script is not recognised. A ksmtuned.conf changed since ksmtuned started is not the one it
runs with: no threshold then. Each of those is logged once (through the notices)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext, process_table_missing
from ksm_exporter.model.labels import bounded_label
from ksm_exporter.readers import describe_error
from ksm_exporter.readers.ksmtuned import (
    KIB,
    LiveKsmtuned,
    free_kb,
    ksmtuned_inputs,
    live_ksmtuned,
    pgrep_f_text,
    threshold_kb,
)
from ksm_exporter.readers.ksmtuned_conf import CONFIG_OPTION, KsmtunedConfig, read_ksmtuned_conf
from ksm_exporter.readers.ksmtuned_rule import RuleLook
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.processes import ProcessNames
from ksm_exporter.state.read_errors import ReadErrors

# Declared with the reader: `watch --explain` takes the same flag without loading a collector.
OPTIONS = (CONFIG_OPTION,)

log = logging.getLogger(__name__)

SMAPS_ROLLUP = "smaps_rollup"  # the PSS of Proxmox VE's kvm processes, for ksmtuned


@dataclass(frozen=True)
class KsmtunedReading:
    """One scrape's look; None where the source could not be observed."""

    config: KsmtunedConfig | None  # None: no file, unreadable, or not the one in force
    memory: MemInfo | None
    committed_kb: int | None  # None: no rule (none running, unrecognised), table hidden...
    running: bool | None
    rule: RuleLook | None = None  # the running ksmtuned's script and its rule


class CmdlineCache:
    """Command lines as `pgrep -f` matches them, for Debian's rule: read once per process
    (and again when its name changes: an exec), not at every scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[str, str | None]] = {}

    def texts(self, procfs: Path, names: ProcessNames) -> dict[int, str | None]:
        with self._lock:
            seen = self._seen
            for pid in seen.keys() - names.names.keys():
                del seen[pid]
            for pid, name in names.names.items():
                if pid not in seen or seen[pid][0] != name:
                    seen[pid] = (name, pgrep_f_text(procfs, pid))
            return {pid: text for pid, (_, text) in seen.items()}


class SaidOnce:
    """One log line (through the notices) each time what is said changes."""

    def __init__(self, read_errors: ReadErrors) -> None:
        self.notices = read_errors.notices
        self._lock = threading.Lock()
        self._said: dict[str, object] = {}

    def say(self, topic: str, key: object, level: int, msg: str, *args: object) -> None:
        with self._lock:
            if self._said.get(topic) == key:
                return
            self._said[topic] = key
        if msg:
            self.notices.note(log, level, msg, *args)


class KsmtunedCollector:
    def __init__(self, config_file: Path, page_size: int, read_errors: ReadErrors) -> None:
        self.config_file = config_file
        self.page_size = page_size
        self.read_errors = read_errors
        self.said = SaidOnce(read_errors)
        self.cmdlines = CmdlineCache()

    def collect(self, ctx: ScrapeContext) -> Collected:
        label = self.config_file.name
        missing: list[str] = []
        config: KsmtunedConfig | None = None
        # No configuration file: ksmtuned is not installed here (every package ships one),
        # or the exporter sees another /etc than ksmtuned's: no threshold to report. One
        # that cannot be read: no threshold either, and said (not ksmtuned's defaults).
        try:
            found = read_ksmtuned_conf(self.config_file)
        except OSError as e:
            missing.append(f"{label}: {describe_error(e)}")
            self.read_errors.scrape_read({label}, {label: describe_error(e)})
        else:
            if found is not None:
                config, problems = found
                errors = {label: "; ".join(problems)} if problems else {}
                self.read_errors.scrape_read({label}, errors)
        memory: MemInfo | str | None = ctx.meminfo()  # None once the reason is in missing
        if isinstance(memory, str):
            missing.append(f"meminfo: {memory}")
            memory = None
        names = ctx.process_names()
        hidden = process_table_missing(names)
        if hidden is not None:
            missing.append(hidden)
            return Collected(
                tuple(ksmtuned_metrics(KsmtunedReading(config, memory, None, None))),
                "; ".join(missing),
            )
        live = live_ksmtuned(
            ctx.procfs,
            names,
            self.config_file,
            config,
            self.page_size,
            lambda: self.cmdlines.texts(ctx.procfs, names),
        )
        if live is None:
            self.said.say("rule", None, logging.INFO, "")
            reading = KsmtunedReading(config, memory, None, False)
            return Collected(tuple(ksmtuned_metrics(reading)), "; ".join(missing) or None)
        pid = live.process.pid
        if live.changed is not None:
            self.said.say("config", (pid, live.changed), logging.WARNING, "%s", live.changed)
            missing.append(live.changed)
        else:
            self.said.say("config", None, logging.INFO, "")
        look, rule = live.rule, live.rule.rule
        if rule is None:
            why = f"ksmtuned (pid {pid}): {look.problem}; its committed memory is unknown"
            self.said.say("rule", (pid, why), logging.WARNING, "%s", why)
            missing.append(why)
        else:
            self.said.say(
                "rule",
                (pid, rule),
                logging.INFO,
                "ksmtuned (pid %d) runs %s: committed memory is %s%s",
                pid,
                look.script,
                rule.words,
                f" ({rule.variant}'s ksmtuned)" if rule.variant else "",
            )
            self.committed_read(live, missing)
        reading = KsmtunedReading(live.config, memory, live.committed_kb, True, look)
        return Collected(tuple(ksmtuned_metrics(reading)), "; ".join(missing) or None)

    def committed_read(self, live: LiveKsmtuned, missing: list[str]) -> None:
        """Count the PSS reads of Proxmox VE's rule; say why committed memory is missing."""
        error = live.committed_error
        if isinstance(error, OSError):  # a kvm process's PSS: the sum would be short
            self.read_errors.scrape_read({SMAPS_ROLLUP}, {SMAPS_ROLLUP: describe_error(error)})
            missing.append(f"committed memory: {describe_error(error)}")
            return
        if error is not None:  # a sum past 2^64 bytes: some process's file lied
            missing.append(f"committed memory: {error}")
            return
        self.read_errors.scrape_read({SMAPS_ROLLUP}, {})


def ksmtuned_metrics(r: KsmtunedReading) -> Iterator[Metric]:
    if r.rule is not None and r.rule.rule is not None:
        info = GaugeMetricFamily(
            "ksmtuned_committed_rule_info",
            "How the running ksmtuned's own script counts committed memory: its rule "
            "(pgrep on the process name, pgrep -f on the command line, or ps -C, and what ps "
            "sums), the distribution whose script it is (fedora, debian, proxmox; empty for "
            "another), and the script.",
            labels=["rule", "variant", "script"],
        )
        # The script's path and pattern are whatever a process named ksmtuned runs.
        labels = [r.rule.rule.words, r.rule.rule.variant, r.rule.script]
        info.add_metric([bounded_label(v) for v in labels], 1.0)
        yield info
    if r.committed_kb is not None:
        yield GaugeMetricFamily(
            "ksmtuned_committed_bytes",
            "Memory committed to guests as the running ksmtuned counts it, by the rule of "
            "its own script (ksmtuned_committed_rule_info): absent when no ksmtuned runs or "
            "its script is not recognised.",
            value=r.committed_kb * KIB,
        )
    if r.memory is not None:
        yield GaugeMetricFamily(
            "ksmtuned_free_bytes",
            "Free memory as ksmtuned counts it: MemFree + Buffers + Cached.",
            value=free_kb(r.memory) * KIB,
        )
    if r.memory is not None and r.config is not None:
        yield GaugeMetricFamily(
            "ksmtuned_threshold_bytes",
            "ksmtuned's threshold: MemTotal * KSM_THRES_COEF / 100, at least "
            "KSM_THRES_CONST kB (from --collector.ksmtuned.config; absent without that file, "
            "or when it changed since the running ksmtuned started).",
            value=threshold_kb(r.memory.total // KIB, r.config) * KIB,
        )
        if r.committed_kb is not None:
            inputs = ksmtuned_inputs(r.config, r.memory, r.committed_kb)
            yield GaugeMetricFamily(
                "ksmtuned_would_run",
                "What ksmtuned's next adjustment decides: 0 (stop KSM) when committed + "
                "threshold < MemTotal and free > threshold, else 1 (run KSM).",
                value=1.0 if inputs.would_run else 0.0,
            )
    if r.running is not None:
        yield GaugeMetricFamily(
            "ksmtuned_running",
            "1 when a ksmtuned process is alive (a zombie is not).",
            value=1.0 if r.running else 0.0,
        )
