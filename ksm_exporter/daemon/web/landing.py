"""The landing page at /: what this is, where the metrics are, the last day as a picture,
KSM now, the VMs KSM merges, the latest edges."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from html import escape

from ksm_exporter import __version__
from ksm_exporter.model.chart import render_svg, window
from ksm_exporter.model.derived import mebibytes, page_size, run_state, saved_bytes, sharing_ratio
from ksm_exporter.model.edge_cause import cause_text, edge_rule_text
from ksm_exporter.model.qemu import present_identifiers
from ksm_exporter.readers.vm_processes import VmProcess
from ksm_exporter.state.history import History, marks_of
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.transitions import TrackerState

# Everything inline: the page is sent with CSP_HEADER (no script, no external asset).
CSP_HEADER = ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:62em}svg.ksm-chart{max-width:100%;"
    "height:auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:right}th{background:#eee}td.l,th.l{text-align:left}"
)


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _mb(n: int | None) -> str:
    return "?" if n is None else str(mebibytes(n))


def summary_rows(snap: Snapshot | None) -> list[tuple[str, str]]:
    """(label, value) pairs of the KSM summary shown on the page, from the watcher's latest
    poll (run, full_scans, pages_sharing, memory): the page never waits on a read."""
    if snap is None:
        return [("KSM", "waiting for the watcher's first poll")]
    v = snap.ksm.values
    if not snap.ksm.present:
        return [("KSM", "not available: the KSM sysfs directory is missing or unreadable")]
    rows: list[tuple[str, str]] = []
    if "run" in v:
        rows.append(("Run state", f"{run_state(v['run']).value} (run = {v['run']})"))
    if "pages_sharing" in v:
        rows.append(("Saved", f"{mebibytes(saved_bytes(v['pages_sharing'], snap.page_size))} MB"))
        if "pages_shared" in v:
            ratio = sharing_ratio(v["pages_sharing"], v["pages_shared"])
            rows.append(("Sharing ratio", f"{ratio:.6g}"))
    for name in (
        "general_profit",
        "pages_shared",
        "pages_sharing",
        "pages_unshared",
        "pages_volatile",
        "full_scans",
        "pages_to_scan",
        "sleep_millisecs",
    ):
        if name in v:
            rows.append((name, str(v[name])))
    if snap.memory is not None:
        rows.append(
            ("Memory used / free", f"{_mb(snap.memory.used)} MB / {_mb(snap.memory.free)} MB")
        )
    if snap.ksm.errors:
        rows.append(
            ("Skipped files", ", ".join(f"{k} ({e})" for k, e in sorted(snap.ksm.errors.items())))
        )
    return rows


def vm_rows(processes: Sequence[VmProcess], page_size: int) -> str:
    """The VMs as an HTML table, most merged first, with the identifier columns (namespace,
    vmid, uuid) any of them has."""
    if not processes:
        return "<p>No VM process found, or none whose KSM state could be read.</p>"
    columns = present_identifiers([p.identity for p in processes])
    head = (
        "".join(f"<th class=l>{escape(c)}</th>" for c in ("vm", *columns))
        + "<th>pid</th><th>merging pages</th><th>merged MB</th><th>profit MB</th>"
    )
    rows = []
    for p in sorted(processes, key=lambda p: (-p.ksm.merging_pages, p.vm, p.pid)):
        ids = "".join(f"<td class=l>{escape(getattr(p.identity, c))}</td>" for c in columns)
        profit = p.ksm.values.get("ksm_process_profit")
        rows.append(
            f"<tr><td class=l>{escape(p.vm)}</td>{ids}<td>{p.pid}</td>"
            f"<td>{p.ksm.merging_pages}</td>"
            f"<td>{mebibytes(p.ksm.merging_pages * page_size)}</td>"
            f"<td>{'?' if profit is None else f'{profit / 2**20:.1f}'}</td></tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_landing(
    snap: Snapshot | None,
    state: TrackerState,
    telemetry_path: str,
    processes: Sequence[VmProcess] | None = None,
    chart: str = "",
) -> str:
    """`snap`: the watcher's latest poll (None before the first); `processes`: the VMs of
    the latest scrape, None when the per-VM collector is off or has not run yet; `chart`:
    the history's picture (ChartCache.svg), an <svg> element."""
    rows = "".join(
        f"<tr><th class=l>{escape(k)}</th><td class=l>{escape(val)}</td></tr>"
        for k, val in summary_rows(snap)
    )
    edges = "".join(
        "<tr>"
        f"<td class=l>{_fmt_time(t.timestamp)}</td>"
        f"<td class=l>{escape(t.from_state.value if t.from_state else '?')}</td>"
        f"<td class=l>{escape(t.to_state.value)}</td>"
        f"<td>{_mb(t.mem_used_bytes)}</td><td>{_mb(t.mem_free_bytes)}</td>"
        f"<td>{_mb(t.mem_available_bytes)}</td>"
        f"<td class=l>{escape(edge_rule_text(t))}</td>"
        f"<td class=l>{escape(cause_text(t.cause, t.controller))}</td>"
        "</tr>"
        for t in reversed(state.history)
    )
    if not edges:
        edges = "<tr><td class=l colspan=8>No change of state seen yet.</td></tr>"
    path = escape(telemetry_path, quote=True)
    vms = "" if processes is None else f"<h2>VMs</h2>{vm_rows(processes, page_size())}"
    return (
        "<!DOCTYPE html><html><head><meta charset=utf-8>"
        f"<title>KSM Exporter</title><style>{_STYLE}</style></head><body>"
        f"<h1>KSM Exporter</h1><p>Version {escape(__version__)}. "
        f'<a href="{path}">Metrics</a> · <a href="transitions">Transitions (JSON)</a> · '
        '<a href="-/healthy">Health</a></p>'
        f"{f'<h2>The last day</h2>{chart}' if chart else ''}"
        f"<h2>KSM now</h2><table>{rows}</table>{vms}"
        "<h2>Latest transitions</h2><table><tr><th class=l>Time</th><th class=l>From</th>"
        "<th class=l>To</th><th>Used MB</th><th>Free MB</th><th>Available MB</th>"
        "<th class=l>ksmtuned's rule (MB): it stops KSM when committed + threshold &lt; total "
        "and free &gt; threshold</th><th class=l>Cause</th></tr>"
        f"{edges}</table></body></html>"
    )


# The landing page's picture covers the last day (or less, from the first point).
CHART_SECONDS = 86400.0


class ChartCache:
    """The history's SVG, drawn again only when the history or the edges changed: the
    page is rendered off the HTTP loop (one worker), and mostly reuses this."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._key: tuple[int, int, float] | None = None
        self._svg = ""

    def svg(self, state: TrackerState) -> str:
        edges = state.history
        key = (self.history.version, len(edges), edges[-1].timestamp if edges else 0.0)
        if key != self._key:
            now = time.time()
            series = self.history.series(since=now - CHART_SECONDS)
            marks = marks_of(edges)
            start, end = window(series, marks, now, CHART_SECONDS)
            self._svg = render_svg(series, marks, start, end, "KSM and free memory, last day")
            self._key = key
        return self._svg
