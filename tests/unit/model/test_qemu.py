"""Each platform's VMs found by default, with the identifiers their command lines give
(tests/fixtures/cmdlines/: one command line per platform, with where its shape is from)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ksm_exporter.daemon.web.landing import vm_rows
from ksm_exporter.flags import serve as serve_flags
from ksm_exporter.model.derived import page_size
from ksm_exporter.model.labels import LABEL_MAX_CHARS
from ksm_exporter.model.qemu import VmIdentity, vm_identity
from ksm_exporter.readers.process_ksm import ProcessKsm
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.vm_processes import VM_PATTERN, VmProcess, read_vm_processes
from tests.support import FIXTURES, run_cli, run_exporter
from tests.support.collect import STOCK_CONF, collector, scrape, vm_labels
from tests.support.fake_procfs import ksm_stat_6_18, write_process

CMDLINES = FIXTURES / "cmdlines"


def cmdline(name: str) -> list[str]:
    lines = (CMDLINES / f"{name}.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


# fixture -> (the process name the platform's qemu gets, the labels it must give)
PLATFORMS = {
    "proxmox-ve": (
        "kvm",
        VmIdentity("vm8006", vmid="8006", uuid="3dd750ce-d910-44d0-9493-525c0be4e687"),
    ),
    "libvirt": (
        "qemu-system-x86",
        VmIdentity("QEMUGuest1", uuid="c7a5fdbd-edaf-9455-926a-d65c16db1809"),
    ),
    "openstack-nova": (
        "qemu-kvm",
        VmIdentity("instance-0000001a", uuid="2f6b0c1e-8a4d-4e0b-9c3a-6e1d2b7f9a10"),
    ),
    "kubevirt": (
        "qemu-kvm",
        VmIdentity("postgres-0", uuid="9d1f3b52-5c2e-5b8e-8f7a-0c4d2e6a1b33", namespace="prod-db"),
    ),
    "qemu-plain": ("qemu:web01", VmIdentity("web01")),
    "libvirt-underscore": (
        "qemu-system-x86",
        VmIdentity("web_01", uuid="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
    ),
}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_each_platforms_command_line_gives_its_identifiers(platform: str) -> None:
    comm, identity = PLATFORMS[platform]
    assert vm_identity(cmdline(platform), comm) == identity
    assert re.search(VM_PATTERN, comm), f"{comm} is not found by default"


@pytest.mark.parametrize(
    ("argv", "identity"),
    [
        # Malformed identifiers identify nothing; the last of repeated options wins.
        (["kvm", "-id", "x1", "-uuid", "not-a-uuid"], VmIdentity("kvm")),
        (["kvm", "-id", "1", "-id", "2"], VmIdentity("kvm", vmid="2")),
        # -uuid before SMBIOS's; SMBIOS of another type does not count.
        (
            ["kvm", "-smbios", "type=0,uuid=3dd750ce-d910-44d0-9493-525c0be4e687"],
            VmIdentity("kvm"),
        ),
        # A namespace-like name without KubeVirt's marks is a name.
        (["qemu-kvm", "-name", "guest=default_vmi"], VmIdentity("default_vmi")),
        # KubeVirt's marks with a name that is no NAMESPACE_NAME: left whole.
        (
            ["qemu-kvm", "-name", "guest=Bad_Name", "-smbios", "type=1,family=KubeVirt"],
            VmIdentity("Bad_Name"),
        ),
    ],
)
def test_identifiers_only_where_present(argv: list[str], identity: VmIdentity) -> None:
    assert vm_identity(argv, argv[0]) == identity


def test_the_default_pattern_is_every_platforms_and_not_their_tools() -> None:
    pattern = serve_flags.parser().parse_args([]).process_pattern
    assert pattern.pattern == VM_PATTERN
    found = ["kvm", "qemu-kvm", "qemu-system-x86", "qemu-system-aar", "qemu:web01"]
    assert all(pattern.search(name) for name in found)
    others = ["kvm-nx-lpage-re", "kvm-pit/4242", "kvm-irqfd-clean", "qemu-img", "qemu-ga"]
    assert not any(pattern.search(name) for name in others)


def node(root: Path) -> Path:
    """A node running one VM of each platform, a kernel thread named kvm, and kvm's
    other kernel threads."""
    proc = root / "proc"
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])  # a complete process table
    for i, platform in enumerate(sorted(PLATFORMS)):
        comm, _ = PLATFORMS[platform]
        pages = 1000 * (i + 1)
        write_process(
            proc,
            3000 + i,
            comm,
            cmdline=cmdline(platform),
            rss_pages=10 * pages,
            ksm_stat=ksm_stat_6_18(pages, 0, pages, 4096),
        )
    # No memory, so an empty ksm_stat, as a zombie's: not a VM, and not "vanished".
    write_process(proc, 9, "kvm", kernel_thread=True, ksm_stat="")
    write_process(proc, 10, "kvm-nx-lpage-re", kernel_thread=True, ksm_stat="")
    return proc


def test_a_node_of_every_platform_by_default(tmp_path: Path) -> None:
    proc = node(tmp_path)
    samples = scrape(collector(proc, pattern=re.compile(VM_PATTERN), config=STOCK_CONF))
    merging = {k: v for k, v in samples.items() if k.startswith("ksm_process_merging_pages")}
    expected = {}
    for i, platform in enumerate(sorted(PLATFORMS)):
        _, ident = PLATFORMS[platform]
        labels = vm_labels(3000 + i, ident.vm, ident.vmid, ident.uuid, ident.namespace)
        expected[f"ksm_process_merging_pages{{{labels}}}"] = 1000 * (i + 1)
    assert merging == expected
    assert samples['ksm_process_read_errors_total{reason="vanished"}'] == 0
    report = read_vm_processes(proc, read_process_names(proc), re.compile(VM_PATTERN), 200)
    assert 9 not in [p.pid for p in report.processes]


# --- what an operator without Grafana sees: `ksm-exporter status` and the landing page --


def test_status_lists_the_vms_with_their_identifiers(tmp_path: Path) -> None:
    proc = node(tmp_path)
    r = run_cli("status", f"--path.sysfs={FIXTURES}/linux-6.18/sys", f"--path.procfs={proc}")
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("-" * 33 + "\n")[2].splitlines()
    # Columns aligned; the identifiers any VM has, "-" where this one has none.
    assert [line.split() for line in table] == [
        ["VM", "NAMESPACE", "VMID", "UUID", "PID", "MERGING_PAGES", "MERGED_MB"],
        ["web01", "-", "-", "-", "3005", "6000", "23"],
        ["vm8006", "-", "8006", "3dd750ce-d910-44d0-9493-525c0be4e687", "3004", "5000", "19"],
        [
            "instance-0000001a",
            "-",
            "-",
            "2f6b0c1e-8a4d-4e0b-9c3a-6e1d2b7f9a10",
            "3003",
            "4000",
            "15",
        ],
        ["web_01", "-", "-", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "3002", "3000", "11"],
        ["QEMUGuest1", "-", "-", "c7a5fdbd-edaf-9455-926a-d65c16db1809", "3001", "2000", "7"],
        ["postgres-0", "prod-db", "-", "9d1f3b52-5c2e-5b8e-8f7a-0c4d2e6a1b33", "3000", "1000", "3"],
    ]
    assert len({line.find(" 30") for line in table[1:]}) == 1  # the pid column lines up
    r = run_cli(
        "status", "--json", f"--path.sysfs={FIXTURES}/linux-6.18/sys", f"--path.procfs={proc}"
    )
    vms = {vm["pid"]: vm for vm in json.loads(r.stdout)["vms"]}
    assert vms[3000]["namespace"] == "prod-db" and vms[3000]["vm"] == "postgres-0"
    assert (vms[3004]["vmid"], vms[3004]["ksm_merging_pages"]) == ("8006", 5000)
    assert vms[3004]["merged_bytes"] == 5000 * page_size()
    assert "vmid" not in vms[3001] and "namespace" not in vms[3004]


def test_landing_page_lists_the_vms(tmp_path: Path) -> None:
    proc = node(tmp_path)
    report = read_vm_processes(proc, read_process_names(proc), re.compile(VM_PATTERN), 200)
    html = vm_rows(report.processes, 4096)
    assert html.startswith(
        "<table><tr><th class=l>vm</th><th class=l>namespace</th><th class=l>vmid</th>"
        "<th class=l>uuid</th><th>pid</th>"
    )
    assert (
        "<tr><td class=l>vm8006</td><td class=l></td><td class=l>8006</td>"
        "<td class=l>3dd750ce-d910-44d0-9493-525c0be4e687</td><td>3004</td>"
    ) in html
    assert "<td class=l>postgres-0</td><td class=l>prod-db</td>" in html
    # Escaped: a VM name is whatever its owner typed.
    evil = VmProcess(1, VmIdentity("<b>x</b>"), ProcessKsm(values={"ksm_merging_pages": 1}))
    assert "&lt;b&gt;x&lt;/b&gt;" in vm_rows([evil], 4096)
    assert "No VM process found" in vm_rows([], 4096)
    # The page itself shows the VMs of the latest scrape (it never reads /proc itself).
    (tmp_path / "sys").symlink_to(FIXTURES / "linux-6.18" / "sys")
    with run_exporter(tmp_path, tmp=tmp_path) as exporter:
        assert "<h2>VMs</h2>" not in exporter.get("/")[1]  # no scrape yet
        exporter.metrics()
        status, body = exporter.get("/")
    assert status == 200
    assert "<h2>VMs</h2>" in body and "<td class=l>vm8006</td>" in body


# --- labels from a command line are bounded ------------------------------------------------


@pytest.mark.skipif(page_size() != 4096, reason="fixtures hold 4 KiB pages")
def test_a_10_kb_name_gives_bounded_labels_on_every_series(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])
    for pid, tail in ((3000, "a"), (3001, "b")):
        argv = ["qemu-kvm", "-name", "guest=" + "n" * 10000 + tail, "-uuid", "U" * 5000]
        write_process(proc, pid, "qemu-kvm", cmdline=argv, ksm_stat=ksm_stat_6_18(1, 0, 1, 4096))
    samples = scrape(collector(proc))
    merging = [k for k in samples if k.startswith("ksm_process_merging_pages{")]
    assert len(merging) == 2
    values = [re.findall(r'="([^"]*)"', k) for k in samples if k.startswith("ksm_process_")]
    assert max(len(v) for labels in values for v in labels) == LABEL_MAX_CHARS
