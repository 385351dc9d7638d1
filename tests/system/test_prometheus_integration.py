"""A real Prometheus scraping three real exporters while the test flips KSM's `run` in
their fixture trees: every dashboard query returns data, the fleet, per-VM, cost, settle
and ksmtuned panels show what the trees hold, and the alerts fire for the right nodes.

The nodes: a flaps (four changes), then settles; b runs VMs (the procfs-vms process
table, with a ksmd that burns CPU and guests that break merged pages while the test runs)
and keeps KSM running; c stops KSM with 5 % of memory available and has one
unparsable KSM file. Every exporter reads
the stock ksmtuned.conf of the fixtures, so the machine's /etc/ksmtuned.conf never
matters.

Loopback only; Prometheus gets a temporary data directory, a 1s scrape and evaluation
interval, and the rules the mixin renders with the flapping window, thresholds and `for` turned
down so the alerts can fire within seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    FIXTURES,
    REPO,
    copy_fixture,
    run_exporter,
    wait_until,
    write_ksm,
)
from tests.support.dashboard_queries import all_queries, families
from tests.support.fake_procfs import write_process
from tests.support.prometheus import (
    DASH,
    JOB,
    KSMTUNED_CONF,
    PROMETHEUS_MARKS,
    Fleet,
    run_prometheus,
)

pytestmark = PROMETHEUS_MARKS

PAGE = 4096  # the fixture exporters run on this machine's page size, checked below
MEM_TOTAL_KB = 32831212  # every node's MemTotal, checked below
# Node c runs short of memory: 5 % available when KSM stops there.
LOW_FREE_KB, LOW_AVAILABLE_KB = 820780, 1641560
SHARING = {"a": 1000, "b": 2000, "c": 4000}
SETTLE_SCANS = 2  # a's --settle.full-scans
# b's VMs (tests/fixtures/procfs-vms): merging pages and profit per vm label.
VM_MERGING = {
    "instance-0000001a": 1500000,
    "web01": 250000,
    "qemu-kvm": 42,
    "secret": 7,
    "db,primary": 0,
}
VM_PROFIT = {"instance-0000001a": 6010091520, "secret": 22272, "db,primary": -640}
KSMD_PID = 37  # b's ksmd kernel thread
KSMD_CPU = 0.1  # b's ksmd uses a tenth of a CPU while the test runs...
COW_PER_SECOND = 20  # ...and its guests write to 20 merged pages a second
CLK_TCK = os.sysconf("SC_CLK_TCK")


def meminfo_kb(root: Path) -> dict[str, int]:
    fields = (line.split() for line in (root / "proc/meminfo").read_text().splitlines())
    return {f[0].rstrip(":"): int(f[1]) for f in fields if f}


def node_tree(tmp: Path, name: str) -> Path:
    root = copy_fixture("linux-6.18", tmp / name)
    write_ksm(root, "run", 1)
    write_ksm(root, "pages_shared", 500)
    write_ksm(root, "pages_sharing", SHARING[name])
    if name == "b":
        # A compute node with VMs: qemu processes with ksm_stat, ksmd, vmstat, ksmtuned.
        shutil.rmtree(root / "proc")
        shutil.copytree(FIXTURES / "procfs-vms/proc", root / "proc", symlinks=True)
    else:
        # No VMs, no ksmtuned; pid 1 visible, so the process table is complete (a /proc
        # without it hides processes, and the ksmtuned figures would be left out).
        write_process(root / "proc", 1, "systemd", cmdline=["/sbin/init"])
        write_process(root / "proc", 2, "kthreadd", kernel_thread=True)
    if name == "c":
        # A file the kernel would never write: skipped and counted as a read error
        # (the exporter health row shows it).
        write_ksm(root, "stable_node_dups", "garbage")
        meminfo = root / "proc/meminfo"
        text = re.sub(r"MemFree:\s+\d+", f"MemFree: {LOW_FREE_KB}", meminfo.read_text())
        text = re.sub(r"MemAvailable:\s+\d+", f"MemAvailable: {LOW_AVAILABLE_KB}", text)
        meminfo.write_text(text)
    assert meminfo_kb(root)["MemTotal"] == MEM_TOTAL_KB, name
    return root


def replace_text(path: Path, text: str) -> None:
    """Rewrite a fixture file atomically (no torn reads)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def busy_ksmd(proc: Path) -> Iterator[None]:
    """Make ksmd's CPU time and cow_ksm grow at KSMD_CPU and COW_PER_SECOND, both
    computed from the time elapsed, so that the rates do not drift with the loop."""
    stat_path, vmstat_path = proc / f"{KSMD_PID}/stat", proc / "vmstat"
    stat, vmstat = stat_path.read_text().split(" "), vmstat_path.read_text()
    stime = int(stat[14])
    cow = int(re.search(r"^cow_ksm (\d+)$", vmstat, re.M)[1])  # type: ignore[index]
    stop = threading.Event()
    start = time.monotonic()

    def run() -> None:
        while not stop.wait(0.1):
            elapsed = time.monotonic() - start
            stat[14] = str(stime + round(elapsed * KSMD_CPU * CLK_TCK))
            replace_text(stat_path, " ".join(stat))
            now = cow + round(elapsed * COW_PER_SECOND)
            replace_text(
                vmstat_path, re.sub(r"^cow_ksm \d+$", f"cow_ksm {now}", vmstat, flags=re.M)
            )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    trees = {name: node_tree(tmp, name) for name in SHARING}
    flags = {name: [f"--collector.ksmtuned.config={KSMTUNED_CONF}"] for name in trees}
    flags["a"].append(f"--settle.full-scans={SETTLE_SCANS}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(busy_ksmd(trees["b"] / "proc"))
        exporters = {
            name: stack.enter_context(run_exporter(root, *flags[name], tmp=tmp, interval="100ms"))
            for name, root in trees.items()
        }
        instances = {name: f"127.0.0.1:{e.port}" for name, e in exporters.items()}
        url = stack.enter_context(run_prometheus(tmp, sorted(instances.values())))
        f = Fleet(url, instances)
        # Some history first: increase() extrapolates a young series' rate to the window's
        # end, which could lift a count of 4 to 4.5 and round it up.
        wait_until(
            lambda: len(f.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 8')) == 3,
            timeout=20,
            what="eight scrapes of each target",
        )
        # c stops once, with 5 % of memory available; a flaps: four changes 1.2s apart
        # (the watcher looks every 100ms); b keeps running.
        write_ksm(trees["c"], "run", 0)
        for run in (0, 1, 0):
            write_ksm(trees["a"], "run", run)
            time.sleep(1.2)
        write_ksm(trees["a"], "run", 1)
        # a settles after its last start: two full scans with pages_sharing unchanged.
        full_scans = int((trees["a"] / "sys/kernel/mm/ksm/full_scans").read_text())
        for scans in range(full_scans + 1, full_scans + 1 + SETTLE_SCANS):
            time.sleep(0.4)
            write_ksm(trees["a"], "full_scans", scans)
        wait_until(
            lambda: (
                f.alerts("KsmFlapping")
                and f.alerts("KsmStoppedUnderMemoryPressure")
                and f.alerts("KsmVmNegativeProfit")
            ),
            timeout=20,
            what="the flapping, memory pressure and VM profit alerts to fire",
        )
        yield f


def test_exporters_count_the_flips(fleet: Fleet) -> None:
    changes = fleet.by_node(fleet.query("sum by (instance) (ksm_run_transitions_total)"))
    assert changes == {"a": 4, "b": 0, "c": 1}
    page = fleet.query("max(ksm_page_size_bytes)")
    assert float(page[0]["value"][1]) == PAGE


def test_the_fleet_exposes_every_per_vm_family(fleet: Fleet) -> None:
    contract = (REPO / "docs/CONTRACT.md").read_text()
    per_vm = contract.split("Per-VM issue:", 1)[1].split("\n\n", 1)[0]
    per_vm_families = set(re.findall(r"\b(ksm\w*)", per_vm))
    assert "ksm_settle_duration_seconds" in per_vm_families
    assert per_vm_families <= set(fleet.api("label/__name__/values"))


def expected_empty(fleet: Fleet) -> set[str]:
    """Queries that may return nothing on this fleet, each for a reason the fleet shows: the
    edge annotation of each cause (`cause=""`: exporters that do not label causes) no edge
    of the fleet has."""
    out = set()
    causes = {
        s["metric"].get("cause", "")
        for s in fleet.query("count by (cause) (ksm_run_transitions_total > 0)")
    }
    for a in DASH["annotations"]["list"]:
        if "expr" in a and re.search(r'cause="(\w*)"', a["expr"])[1] not in causes:  # type: ignore[index]
            out.add(f"annotation / {a['name']}")
    return out


def test_every_dashboard_query_returns_data(fleet: Fleet) -> None:
    exposed = set(fleet.api("label/__name__/values"))  # recording rules' names included
    allowed_empty = expected_empty(fleet)
    empty = set()
    for q in all_queries(DASH):
        used = families(q.expr)
        assert used, q.where
        if q.where not in allowed_empty:
            assert used <= exposed, (q.where, used - exposed)
        if not fleet.query(fleet.filled(q.expr)):
            empty.add(q.where)
    assert empty == allowed_empty


def test_variable_queries_list_the_job_and_instances(fleet: Fleet) -> None:
    # label_values(ksm_up, job) and label_values(ksm_up{job=~"$job"}, instance)
    assert fleet.api("label/job/values", **{"match[]": "ksm_up"}) == [JOB]
    instances = fleet.api("label/instance/values", **{"match[]": f'ksm_up{{job=~"{JOB}"}}'})
    assert sorted(instances) == sorted(fleet.instances.values())


def test_fleet_totals(fleet: Fleet) -> None:
    saved = sum(SHARING.values()) * PAGE
    (total,) = fleet.panel_query("Saved across the fleet")
    assert float(total["value"][1]) == saved
    by_cluster = fleet.panel_query("Saved by cluster")
    assert [(s["metric"]["job"], float(s["value"][1])) for s in by_cluster] == [(JOB, saved)]
    (share,) = fleet.panel_query("Fleet savings share of RAM")
    assert float(share["value"][1]) == pytest.approx(saved / (3 * MEM_TOTAL_KB * 1024))
    (running,) = fleet.panel_query("Nodes running KSM")
    assert float(running["value"][1]) == 2  # a ends running, c stopped
    (missing,) = fleet.panel_query("Nodes without KSM sysfs")
    assert float(missing["value"][1]) == 0
    (profit,) = fleet.panel_query("Fleet general profit")
    assert float(profit["value"][1]) == 3 * -1310720  # the linux-6.18 fixture's value
    top = fleet.by_node(fleet.panel_query("Top nodes by saved memory"))
    assert top == {name: n * PAGE for name, n in SHARING.items()}


def test_fleet_flapping_and_memory_pressure_tables(fleet: Fleet) -> None:
    flaps = fleet.panel_query("Nodes whose KSM flaps")
    assert fleet.by_node(flaps) == {"a": 4, "c": 1}
    assert [s["metric"]["instance"] for s in flaps] == [
        fleet.instances["a"],
        fleet.instances["c"],
    ]
    pressure = fleet.panel_query("Nodes where KSM is stopped under memory pressure")
    assert [s["metric"]["state"] for s in pressure] == ["stopped"]
    assert fleet.by_node(pressure) == pytest.approx({"c": LOW_AVAILABLE_KB / MEM_TOTAL_KB})
    available = fleet.by_node(fleet.panel_query("Available memory"))
    assert available["c"] == pytest.approx(LOW_AVAILABLE_KB / MEM_TOTAL_KB)
    assert set(available) == {"a", "b", "c"}


def test_flapping_alert_fires_for_the_flapping_node_only(fleet: Fleet) -> None:
    firing = fleet.alerts("KsmFlapping")
    assert set(firing) == {"a"}
    alert = firing["a"]
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["role"] == "compute"  # the target's own label
    assert alert["annotations"]["summary"] == "KSM keeps starting and stopping."
    assert re.fullmatch(
        rf"KSM on {re.escape(fleet.instances['a'])} changed state 4 times in 1m \(alert "
        r"above 3\)\. Cause of most changes: (ksmtuned|other|unknown|not reported by this "
        r"exporter)\.",
        alert["annotations"]["description"],
    ), alert["annotations"]["description"]
    assert set(fleet.alerts("KsmStoppedUnderMemoryPressure")) == {"c"}


def test_per_vm_panels(fleet: Fleet) -> None:
    saved = fleet.by_vm(fleet.panel_query("Saved per VM (top 10)"))
    assert saved == {("b", vm): n * PAGE for vm, n in VM_MERGING.items()}
    profit = fleet.by_vm(fleet.panel_query("KSM profit per VM (lowest 10)"))
    assert profit == {("b", vm): n for vm, n in VM_PROFIT.items()}
    # The fleet row counts them per node from recorded series, beside the node's VMs.
    losing, vms = fleet.panel_queries("Nodes with VMs where KSM costs more than it saves")
    assert fleet.by_node(losing) == {"b": 1}  # db,primary
    assert fleet.by_node(vms) == {"b": len(VM_MERGING)}
    # One row per VM: the table's queries all carry the VM's labels.
    table = fleet.panel_queries("VMs")
    assert fleet.by_vm(table[0]) == saved
    assert {(s["metric"]["vm"], s["metric"]["pid"]) for s in table[0]} == {
        ("instance-0000001a", "1001"),
        ("web01", "1002"),
        ("db,primary", "1003"),
        ("qemu-kvm", "1004"),
        ("secret", "1005"),
    }
    for result in table[1:]:
        assert set(fleet.by_vm(result)) <= set(saved)
    dropped, errors = fleet.panel_queries("VMs not exported")
    assert fleet.by_node(dropped) == {"a": 0, "b": 0, "c": 0}
    # b's pid 1007 has an empty ksm_stat, as a process that exits while read: vanished
    # at every scrape.
    names = {v: k for k, v in fleet.instances.items()}
    by_reason = {
        (names[s["metric"]["instance"]], s["metric"]["reason"]): float(s["value"][1])
        for s in errors
    }
    assert by_reason.pop(("b", "vanished")) > 0
    zero = {(name, reason): 0 for name in SHARING for reason in ("unreadable", "vanished")}
    del zero[("b", "vanished")]
    assert by_reason == zero


def test_exporter_health_panels(fleet: Fleet) -> None:
    (down,) = fleet.panel_query("Targets down")
    assert float(down["value"][1]) == 0
    (errors,) = fleet.panel_query("Read errors")
    assert errors["metric"]["instance"] == fleet.instances["c"]
    assert errors["metric"]["file"].endswith("stable_node_dups")
    (left_out,) = fleet.panel_query("VMs left out")
    assert float(left_out["value"][1]) == 0


def test_cost_panels(fleet: Fleet) -> None:
    (cpu,) = fleet.panel_query("ksmd CPU")
    assert fleet.by_node([cpu]) == {"b": pytest.approx(KSMD_CPU, rel=0.25)}
    (cores,) = fleet.panel_query("ksmd CPU, all nodes")
    assert float(cores["value"][1]) == pytest.approx(KSMD_CPU, rel=0.25)
    cow, swapin = fleet.panel_queries("Copy-on-write breaks and swap-in copies")
    assert fleet.by_node(cow) == {"b": pytest.approx(COW_PER_SECOND, rel=0.25)}
    assert fleet.by_node(swapin) == {"b": 0}


def test_settle_panels(fleet: Fleet) -> None:
    # a settled about 0.8 s after its last start (two full scans 0.4 s apart); b has run
    # since its exporter started, without a full scan; c is stopped.
    states = fleet.by_node(fleet.panel_query("Settled"))
    assert states == {"a": 1, "b": 0, "c": 2}  # settled, settling, not running
    duration = fleet.by_node(fleet.panel_query("Time to settle"))
    assert set(duration) == {"a"}
    assert 0.5 <= duration["a"] <= 1.5


def test_ksmtuned_panels(fleet: Fleet) -> None:
    threshold = MEM_TOTAL_KB * 20 // 100 * 1024  # KSM_THRES_COEF=20 of stock.conf
    meminfo = {
        "a": meminfo_kb(FIXTURES / "linux-6.18"),
        "b": meminfo_kb(FIXTURES / "procfs-vms"),
        "c": {**meminfo_kb(FIXTURES / "linux-6.18"), "MemFree": LOW_FREE_KB},
    }
    free, thres, mem_free = fleet.panel_queries("ksmtuned: free memory and threshold")
    assert fleet.by_node(thres) == {name: threshold for name in SHARING}
    assert fleet.by_node(mem_free) == {name: m["MemFree"] * 1024 for name, m in meminfo.items()}
    assert fleet.by_node(free) == {
        name: (m["MemFree"] + m["Buffers"] + m["Cached"]) * 1024 for name, m in meminfo.items()
    }
    # b: ksmtuned runs there and VMs commit most memory, so it would run KSM. a and c run
    # no ksmtuned: no script says how it would count committed memory, so committed and
    # would_run are absent there (docs/CONTRACT.md), never a guess.
    would_run, running, alive = fleet.panel_queries("ksmtuned's decision and KSM")
    assert fleet.by_node(would_run) == {"b": 1}
    assert fleet.by_node(running) == {"a": 1, "b": 1, "c": 0}
    assert fleet.by_node(alive) == {"a": 0, "b": 1, "c": 0}
    committed, total = fleet.panel_queries("ksmtuned: committed memory")
    assert fleet.by_node(total) == {name: MEM_TOTAL_KB * 1024 for name in SHARING}
    by_node = fleet.by_node(committed)  # committed + threshold, where ksmtuned runs
    assert list(by_node) == ["b"] and by_node["b"] > threshold


def test_vm_profit_alert_is_one_per_node_and_names_the_vm(fleet: Fleet) -> None:
    firing = [
        a
        for a in fleet.api("alerts")["alerts"]
        if a["labels"]["alertname"] == "KsmVmNegativeProfit" and a["state"] == "firing"
    ]
    assert [a["labels"]["instance"] for a in firing] == [fleet.instances["b"]]
    (alert,) = firing
    assert "vm" not in alert["labels"] and "pid" not in alert["labels"]
    assert alert["labels"]["severity"] == "info"
    assert alert["annotations"]["summary"] == "KSM costs VMs more memory than it saves."
    assert alert["annotations"]["description"] == (
        f"KSM's profit on 1 VM(s) of {fleet.instances['b']} is below -0 MiB; lowest: "
        "db,primary (pid 1003) at -640B."
    )
