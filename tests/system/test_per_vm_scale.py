"""A compute node's process table: 10,000 processes, 200 of them VMs (time: bench/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.vm_processes import QEMU_PATTERN, read_vm_processes
from tests.support.collect import collector, scrape, vm_labels
from tests.support.fake_procfs import write_compute_node

PROCESSES, VMS = 10_000, 200


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_compute_node(tmp_path_factory.mktemp("node"), PROCESSES, VMS)


def test_every_vm_is_exported(node: Path) -> None:
    samples = scrape(collector(node))
    merging = {k: v for k, v in samples.items() if k.startswith("ksm_process_merging_pages")}
    assert len(merging) == VMS
    first, last = vm_labels(1000, "instance-00000000"), vm_labels(10751, "instance-000000c7")
    assert merging[f"ksm_process_merging_pages{{{first}}}"] == 1000
    assert merging[f"ksm_process_merging_pages{{{last}}}"] == 200000
    assert sum(merging.values()) == 1000 * VMS * (VMS + 1) // 2
    assert samples["ksm_process_series_dropped"] == 0
    assert samples["ksmtuned_committed_bytes"] == VMS * 8 * 262144 * 4096
    assert samples["ksmtuned_threshold_bytes"] == 422705757 * 1024
    assert samples["ksmtuned_would_run"] == 1  # free (115 GB) is under the threshold
    assert samples["ksm_cow_breaks_total"] == 123456


def test_the_limit_keeps_the_vms_that_merge_most(node: Path) -> None:
    names = read_process_names(node)
    assert len(names.names) == PROCESSES
    report = read_vm_processes(node, names, re.compile(QEMU_PATTERN), 150)
    assert report.dropped == 50
    assert sorted(p.ksm.merging_pages for p in report.processes) == [
        1000 * (vm + 1) for vm in range(50, VMS)
    ]
    assert [p.vm for p in report.processes][:2] == ["instance-00000032", "instance-00000033"]
