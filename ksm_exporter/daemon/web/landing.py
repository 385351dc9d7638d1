"""The landing page at /: what this is, where the metrics are, KSM now, the latest edges."""

from __future__ import annotations

from datetime import datetime
from html import escape

from ksm_exporter import __version__
from ksm_exporter.model.derived import mebibytes, run_state, saved_bytes, sharing_ratio
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.transitions import TrackerState

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}"
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


def render_landing(snap: Snapshot | None, state: TrackerState, telemetry_path: str) -> str:
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
        "</tr>"
        for t in reversed(state.history)
    )
    if not edges:
        edges = "<tr><td class=l colspan=6>No change of state seen yet.</td></tr>"
    path = escape(telemetry_path, quote=True)
    return (
        "<!DOCTYPE html><html><head><meta charset=utf-8>"
        f"<title>KSM Exporter</title><style>{_STYLE}</style></head><body>"
        f"<h1>KSM Exporter</h1><p>Version {escape(__version__)}. "
        f'<a href="{path}">Metrics</a> · <a href="transitions">Transitions (JSON)</a> · '
        '<a href="-/healthy">Health</a></p>'
        f"<h2>KSM now</h2><table>{rows}</table>"
        "<h2>Latest transitions</h2><table><tr><th class=l>Time</th><th class=l>From</th>"
        "<th class=l>To</th><th>Used MB</th><th>Free MB</th><th>Available MB</th></tr>"
        f"{edges}</table></body></html>"
    )
