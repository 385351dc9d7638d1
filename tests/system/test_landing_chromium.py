"""The landing page as a person sees it: Debian's chromium, headless, opens the page of a
real exporter (the daemon as `serve` builds it, its HTTP server on a socket) after a
scripted day, takes a screenshot (a test artefact; docs/landing.png is this picture) and
dumps the DOM it built.

The day goes through the watcher: every minute of it, the fixture node's meminfo and KSM
files are rewritten and the watcher polls once, on a clock set to that minute. Free memory
swings around ksmtuned's threshold; ksmtuned (its process in the fixture /proc) starts
and stops KSM by its rule, a person and MOM flip `run` against it, so the edges have both
causes, each explained by the real edge reader. A VM and a restored controller with
markup in their names must come out as text.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

import ksm_exporter.state.monitor as monitor_module
from ksm_exporter.commands.serve import Daemon
from ksm_exporter.model.derived import page_size
from ksm_exporter.model.edge_cause import Cause
from tests.support import FIXTURES, write_ksm
from tests.support.fake_procfs import (
    CONTROLLER_PIDS,
    KSMTUNED_PID,
    QEMU_PIDS,
    write_ksmtuned_node,
    write_ksmtuned_script,
    write_process,
)
from tests.support.in_process import built_daemon

REPO = Path(__file__).parents[2]
ARTEFACTS = Path(os.environ.get("TEST_ARTEFACTS", REPO / "build" / "test-artefacts"))
CHROMIUM = shutil.which("chromium")
# Headless, offline, no profile left behind (a new --user-data-dir each run).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
]
PAGE = page_size()
GIB_KB = 1024 * 1024
TOTAL_KB = 32 * GIB_KB
THRES_KB = TOTAL_KB * 20 // 100  # stock ksmtuned.conf: 20 % of MemTotal
BUFFERS_KB = 512 * 1024
# The scripted day: 23.5 h of polls, after an edge restored from the state file, all within
# the page's last 24 hours.
MINUTES = 1410
HOSTILE_VM = '<img src=x onerror="alert(1)">'
HOSTILE_CONTROLLER = "<script>alert(2)</script>"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def free_at(minute: int) -> int:
    """MemFree (kB) at a minute of the day: a swing of +-1.6 GiB around the threshold,
    three times a day, with a ripple: KSM starts and stops several times."""
    swing = math.sin(minute / 1440 * 6 * math.pi) + 0.25 * math.sin(minute / 37)
    return int(THRES_KB - BUFFERS_KB + 1.6 * GIB_KB * swing)


def write_meminfo(proc: Path, free_kb: int) -> None:
    """meminfo with MemAvailable 3 GiB above ksmtuned's free (reclaimable slab, say)."""
    text = (
        f"MemTotal: {TOTAL_KB} kB\nMemFree: {free_kb} kB\n"
        f"MemAvailable: {free_kb + BUFFERS_KB + 3 * GIB_KB} kB\n"
        f"Buffers: {BUFFERS_KB} kB\nCached: 0 kB\n"
    )
    (proc / ".meminfo").write_text(text)
    (proc / ".meminfo").replace(proc / "meminfo")


class Node:
    """The fixture node and who writes its `run`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.run = 0
        self.pages_sharing = 0

    def ksmtuned(self, running: bool) -> None:
        d = self.proc / str(KSMTUNED_PID)
        if running and not d.exists():
            cmdline = ["/bin/bash", "/usr/sbin/ksmtuned"]  # as write_ksmtuned_node has it
            write_process(self.proc, KSMTUNED_PID, "ksmtuned", cmdline=cmdline)
            write_ksmtuned_script(self.proc, KSMTUNED_PID, "fedora")
        elif not running and d.exists():
            shutil.rmtree(d)

    def mom(self, running: bool) -> None:
        d = self.proc / str(CONTROLLER_PIDS["momd"])
        if running and not d.exists():
            write_process(self.proc, CONTROLLER_PIDS["momd"], "momd", cmdline=["momd"])
        elif not running and d.exists():
            shutil.rmtree(d)

    def write_run(self, run: int) -> None:
        self.run = run
        write_ksm(self.root, "run", run)


def scripted_day(d: Daemon, node: Node, start: float) -> None:
    """A poll a minute, the watcher's clock set to each, up to now."""
    clock = SimpleNamespace(time=lambda: start)
    original = monitor_module.time
    monitor_module.time = clock  # type: ignore[assignment]
    try:
        for minute in range(MINUTES):
            clock.time = lambda m=minute: start + 60 * m  # type: ignore[misc]
            free = free_at(minute)
            write_meminfo(node.proc, free)
            hour = minute / 60
            if 11.5 <= hour < 13.5:  # ksmtuned stopped, MOM in charge: its own, lower limit
                node.ksmtuned(False)
                node.mom(True)
                wanted = 1 if free + BUFFERS_KB < THRES_KB - GIB_KB // 2 else 0
            else:
                node.ksmtuned(True)
                node.mom(False)
                # ksmtuned's rule (committed + threshold < total here): start below it.
                wanted = 1 if free + BUFFERS_KB <= THRES_KB else 0
            if minute in (300, 301):  # someone stops it by hand: ksmtuned starts it again
                wanted = 0
            if minute == 1140:  # ... and unmerges everything
                wanted = 2
            if node.run == 2 and minute < 1150:
                wanted = 2
            if wanted != node.run:
                node.write_run(wanted)
            if node.run == 1:
                node.pages_sharing = min(node.pages_sharing + 2500 * 4096 // PAGE, 700_000)
            elif node.run == 2:
                node.pages_sharing = max(node.pages_sharing - 100_000, 0)
            write_ksm(node.root, "pages_sharing", node.pages_sharing)
            d.watcher.poll_once()
    finally:
        monitor_module.time = original  # type: ignore[assignment]


class Dom(HTMLParser):
    """The elements chromium built: (tag, attributes) and the text of each <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles.append(data)
            self._in_title = False


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    root = tmp_path / "node"
    shutil.copytree(FIXTURES / "linux-6.18" / "sys", root / "sys")
    write_ksm(root, "run", 0)
    write_ksmtuned_node(
        root / "proc", total_kb=TOTAL_KB, free_kb=THRES_KB, qemu_rss_kb=[4 * GIB_KB] * 4,
        page_size=PAGE,
    )  # fmt: skip
    # A VM whose name is markup, merging pages (so the VM table lists it).
    cmdline = (root / "proc" / str(QEMU_PIDS[0]) / "cmdline").read_bytes()
    name = b"guest=" + HOSTILE_VM.encode()
    (root / "proc" / str(QEMU_PIDS[0]) / "cmdline").write_bytes(
        cmdline.replace(b"guest=instance-00000000", name)
    )
    for pid in QEMU_PIDS[:4]:
        (root / "proc" / str(pid) / "ksm_merging_pages").write_text("1000\n")
    # The day ends now; before it, within the page's last 24 h, an edge restored from the
    # state file, made by a controller whose name is markup.
    start = time.time() - MINUTES * 60
    restored = {
        "timestamp": start - 900,
        "from": "stopped",
        "to": "running",
        "run": 1,
        "mem_total_bytes": TOTAL_KB * 1024,
        "mem_used_bytes": (TOTAL_KB - THRES_KB) * 1024,
        "mem_free_bytes": THRES_KB * 1024,
        "mem_available_bytes": THRES_KB * 1024,
        "cause": "other",
        "controller": HOSTILE_CONTROLLER,
    }
    (tmp_path / "state").write_text(json.dumps(restored) + "\n")
    with built_daemon(
        root,
        f"--state.file={tmp_path}/state",
        f"--collector.ksmtuned.config={FIXTURES / 'ksmtuned' / 'stock.conf'}",
        "--no-collector.vmstat",
    ) as d:
        scripted_day(d, Node(root), start)
        d.server.serve_in_thread()
        try:
            yield d, f"http://127.0.0.1:{d.server.port}"
        finally:
            d.server.shutdown()


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ksm-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )


def test_the_landing_page_in_chromium_after_a_day(exporter: tuple[Daemon, str]) -> None:
    d, url = exporter
    edges = d.monitor.tracker_state().history
    causes = {t.cause for t in edges}
    assert causes == {Cause.KSMTUNED, Cause.OTHER} and len(edges) >= 8, edges  # none unknown
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:  # the VMs' table
        assert r.status == 200
    with urllib.request.urlopen(url + "/", timeout=30) as r:
        assert r.headers["Content-Security-Policy"] == (
            "default-src 'none'; style-src 'unsafe-inline'"
        )

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "landing.png"
    shot.unlink(missing_ok=True)
    done = chromium(url + "/", "--window-size=1040,700", f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000  # a picture, not a blank page
    assert "Content Security Policy" not in done.stderr  # nothing the page needs was refused
    if os.environ.get("UPDATE_DOCS_PICTURE"):
        shutil.copy(shot, REPO / "docs" / "landing.png")

    dump = chromium(url + "/", "--dump-dom").stdout
    (ARTEFACTS / "landing.html").write_text(dump)
    dom = Dom()
    dom.feed(dump)
    tags = [tag for tag, _ in dom.elements]
    assert "script" not in tags and "img" not in tags
    assert not any(k.startswith("on") for _, attrs in dom.elements for k in attrs)
    series = [a["data-series"] for t, a in dom.elements if t == "path" and "data-series" in a]
    assert sorted(series) == sorted(
        [
            "ksmtuned_free_bytes",
            "mem_free_bytes",
            "mem_available_bytes",
            "ksmtuned_threshold_bytes",
            "saved_bytes",
        ]
    )  # one path per series
    markers = [a for t, a in dom.elements if t == "g" and a.get("class") == "edge"]
    assert [m["data-cause"] for m in markers] == [t.cause.value for t in edges]
    assert [m["data-state"] for m in markers] == [t.to_state.value for t in edges]
    # Each marker's tooltip names its cause; the controller's markup is text.
    tooltips = [t for t in dom.titles if "cause:" in t]
    assert len(tooltips) == len(edges)
    assert all(f"cause: {t.cause.value}" in tip for t, tip in zip(edges, tooltips))
    assert f"cause: other ({HOSTILE_CONTROLLER})" in tooltips[0]
    assert "cause: other (mom)" in " ".join(tooltips)
    assert '<td class="l">&lt;img src=x onerror="alert(1)"&gt;</td>' in dump  # as text
