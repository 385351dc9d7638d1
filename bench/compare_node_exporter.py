"""ksm-exporter against node_exporter's ksmd collector, side by side in one run.

    python -m bench.compare_node_exporter [--scrapes 3000] [--idle-seconds 30]  # repo root

Both exporters serve the same copy of tests/fixtures/linux-6.18 on loopback:
- ours: `python -m ksm_exporter` with its defaults (1 s watcher interval, exporter metrics on);
- node_exporter (Debian's prometheus-node-exporter): --collector.disable-defaults
  --collector.ksmd, the same --path.sysfs and --path.procfs.

Measured, in this order, for each exporter (the scrape phases alternate between the two in
rounds, so a burst of noise on this shared machine lands on both):
- latency p50/p99 of sequential scrapes on one keep-alive connection (plain GET);
- the same with Prometheus' scrape headers (OpenMetrics Accept, gzip);
- latency p50/p99 with 16 concurrent keep-alive clients;
- CPU time per scrape: utime+stime from /proc/PID/stat over the sequential scrapes;
- RSS (VmRSS) after all scrapes; ours also with NOTIFY_SOCKET set (sd_notify loads
  libsystemd, as under systemd), through the same scrapes, its RSS alone shown;
- idle CPU: over --idle-seconds with no scrapes (our watcher polls at its default 1 s).

Not a test: it prints a table, to be copied into docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import listening_process, toolkit_port
from tests.support.http_client import KeepAliveClient, rss_bytes

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "linux-6.18"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TICK = os.sysconf("SC_CLK_TCK")

PLAIN = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"
# What Prometheus 2.x sends on every scrape.
PROMETHEUS = (
    b"GET /metrics HTTP/1.1\r\nHost: bench\r\nUser-Agent: Prometheus/2.45.0\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    b"version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


@dataclass
class Target:
    name: str
    proc: subprocess.Popen[str]
    port: int
    seq: list[float] = field(default_factory=list)
    prom: list[float] = field(default_factory=list)
    conc: list[float] = field(default_factory=list)
    cpu: float = 0.0
    cpu_scrapes: int = 0
    rss: float = 0.0
    idle_cpu: float = 0.0


def sequential(
    t: Target, n: int, request: bytes, out: list[float], count_cpu: bool = False
) -> None:
    c = KeepAliveClient(t.port)
    try:
        cpu0 = cpu_seconds(t.proc.pid)
        for _ in range(n):
            start = time.perf_counter()
            status, _ = c.get(request)
            out.append(time.perf_counter() - start)
            assert status == 200, status
        if count_cpu:
            t.cpu += cpu_seconds(t.proc.pid) - cpu0
            t.cpu_scrapes += n
    finally:
        c.close()


def concurrent(t: Target, clients: int, per_client: int) -> None:
    results: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            sequential(t, per_client, PLAIN, results[i])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    for r in results:
        t.conc.extend(r)


def wait_up(t: Target) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if t.proc.poll() is not None:
            sys.exit(f"{t.name} exited with {t.proc.returncode}")
        try:
            c = KeepAliveClient(t.port)
            if c.get(PLAIN)[0] == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{t.name} did not answer within 15 s")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scrapes", type=int, default=3000, help="sequential scrapes per exporter")
    p.add_argument("--rounds", type=int, default=6, help="alternations between the two")
    p.add_argument("--concurrent-scrapes", type=int, default=4800)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    args = p.parse_args()
    if not Path(NODE_EXPORTER).exists():
        sys.exit(f"{NODE_EXPORTER} not found (apt-get install prometheus-node-exporter)")

    tmp = Path(tempfile.mkdtemp(prefix="ksm-bench-"))
    tree = tmp / "tree"
    shutil.copytree(FIXTURE, tree)
    paths = [f"--path.sysfs={tree}/sys", f"--path.procfs={tree}/proc"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Both on port 0, each bound port read from the exporter's log (ours: "listening";
    # node_exporter: exporter-toolkit's "Listening on"): nothing can take it in between.
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        ours_run = stack.enter_context(
            listening_process(
                [sys.executable, "-m", "ksm_exporter", "--web.listen-address=127.0.0.1:0", *paths],
                tmp,
                "ksm-exporter",
                env=env,
            )
        )
        node_run = stack.enter_context(
            listening_process(
                [
                    NODE_EXPORTER,
                    "--collector.disable-defaults",
                    "--collector.ksmd",
                    "--web.listen-address=127.0.0.1:0",
                    *paths,
                ],
                tmp,
                "node_exporter",
                toolkit_port,
            )
        )
        # Ours again with NOTIFY_SOCKET, as systemd runs it: sd_notify loads libsystemd,
        # which the first one does not. Only its RSS is shown. (The journal, where journald
        # runs, loads systemd.journal's modules too: about 0.8 MB more.)
        notify = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        notify.bind(str(tmp / "notify"))
        notify_run = stack.enter_context(
            listening_process(
                [
                    sys.executable,
                    "-m",
                    "ksm_exporter",
                    "--web.listen-address=127.0.0.1:0",
                    *paths,
                ],
                tmp,
                "ksm-exporter-sd-notify",
                env={**env, "NOTIFY_SOCKET": str(tmp / "notify")},
            )
        )
        ours = Target("ksm-exporter", ours_run.proc, ours_run.port)
        node = Target("node_exporter", node_run.proc, node_run.port)
        with_notify = Target("ksm-exporter", notify_run.proc, notify_run.port)
        targets = [ours, node, with_notify]
        for t in targets:
            wait_up(t)
            sequential(t, 300, PLAIN, [])  # warm up
        per_round = max(1, args.scrapes // args.rounds)
        conc_round = max(16, args.concurrent_scrapes // args.rounds // 16)
        for r in range(args.rounds):
            for t in targets if r % 2 == 0 else targets[::-1]:
                sequential(t, per_round, PLAIN, t.seq, count_cpu=True)
                sequential(t, per_round // 3, PROMETHEUS, t.prom)
                concurrent(t, 16, conc_round)
        for t in targets:
            t.rss = rss_bytes(t.proc.pid) / 2**20
        cpu0 = {t.proc.pid: cpu_seconds(t.proc.pid) for t in targets}
        time.sleep(args.idle_seconds)
        for t in targets:
            t.idle_cpu = (cpu_seconds(t.proc.pid) - cpu0[t.proc.pid]) / args.idle_seconds

    rows = [
        ("sequential keep-alive p50 (ms)", lambda t: pct(t.seq, 50)),
        ("sequential keep-alive p99 (ms)", lambda t: pct(t.seq, 99)),
        ("Prometheus headers (gzip) p50 (ms)", lambda t: pct(t.prom, 50)),
        ("Prometheus headers (gzip) p99 (ms)", lambda t: pct(t.prom, 99)),
        ("16 concurrent clients p50 (ms)", lambda t: pct(t.conc, 50)),
        ("16 concurrent clients p99 (ms)", lambda t: pct(t.conc, 99)),
        ("CPU per scrape (ms)", lambda t: t.cpu / t.cpu_scrapes * 1000),
        ("RSS after the scrapes (MB)", lambda t: t.rss),
        ("idle CPU, no scrapes (ms/s)", lambda t: t.idle_cpu * 1000),
    ]
    print(f"| {'':36} | {ours.name:>12} | {node.name:>13} | ratio |")
    print(f"|{'-' * 38}|{'-' * 14}|{'-' * 15}|-------|")
    for label, f in rows:
        a, b = f(ours), f(node)
        ratio = f"{a / b:5.2f}" if b else "  -  "
        print(f"| {label:36} | {a:12.3f} | {b:13.3f} | {ratio} |")
    a, b = with_notify.rss, node.rss
    print(f"| {'RSS with sd_notify (MB)':36} | {a:12.3f} | {b:13.3f} | {a / b:5.2f} |")
    print(
        f"\n{len(ours.seq)} sequential, {len(ours.prom)} Prometheus-header and "
        f"{len(ours.conc)} concurrent scrapes per exporter; idle over {args.idle_seconds:g} s; "
        f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
