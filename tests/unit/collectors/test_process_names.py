"""ProcessNameCache: which names a scrape reads again, and how soon a change is seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksm_exporter.collectors import process_names
from ksm_exporter.collectors.process_names import SWEEP_SCRAPES, ProcessNameCache
from ksm_exporter.readers.processes import read_names


def make_proc(root: Path, names: dict[int, str]) -> Path:
    for pid, name in names.items():
        (root / str(pid)).mkdir(parents=True, exist_ok=True)
        (root / str(pid) / "comm").write_text(name + "\n")
    (root / "meminfo").write_text("")  # not a pid: ignored
    return root


def rename(root: Path, pid: int, name: str) -> None:
    (root / str(pid) / "comm").write_text(name + "\n")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The pids whose names each scrape read."""
    seen: list[list[int]] = []

    def counting(procfs: Path, pids: list[int]) -> dict[int, str]:
        seen.append(sorted(pids))
        return read_names(procfs, pids)

    monkeypatch.setattr(process_names, "read_names", counting)
    return seen


def is_vm(name: str) -> bool:
    return name.startswith("qemu")


def test_steady_scrapes_read_a_sweep_share_and_the_names_that_matter(
    tmp_path: Path, reads: list[list[int]]
) -> None:
    pids = {pid: "bash" for pid in range(100, 420)} | {7: "qemu-kvm"}
    proc = make_proc(tmp_path, pids)
    cache = ProcessNameCache(is_vm)
    assert cache.names(proc).names == pids
    assert cache.names(proc).names == pids  # the previous scrape's new pids again
    assert len(reads[0]) == len(reads[1]) == len(pids)
    for _ in range(SWEEP_SCRAPES):
        assert cache.names(proc).names == pids
    steady = reads[2:]
    assert all(7 in r for r in steady)  # the VM at every scrape
    assert all(len(r) <= len(pids) // SWEEP_SCRAPES + 2 for r in steady)
    # Over SWEEP_SCRAPES scrapes every name was read again.
    assert set().union(*map(set, steady)) == set(pids)


def test_a_fork_named_before_its_exec_is_named_again_at_the_next_scrape(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, {1: "systemd"})
    cache = ProcessNameCache(is_vm)
    for _ in range(3):
        cache.names(proc)
    make_proc(tmp_path, {4242: "rpc-libvirtd"})  # forked ...
    assert cache.names(proc).names[4242] == "rpc-libvirtd"
    rename(tmp_path, 4242, "qemu-system-x86")  # ... then exec'd into qemu
    assert cache.names(proc).names[4242] == "qemu-system-x86"


def test_any_other_change_of_name_is_seen_within_a_sweep(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, {pid: "bash" for pid in range(1, 50)})
    cache = ProcessNameCache(is_vm)
    for _ in range(3):
        cache.names(proc)
    rename(tmp_path, 23, "qemu-kvm")  # a late exec, or the pid reused by a VM
    seen_after = next(
        n for n in range(1, SWEEP_SCRAPES + 1) if cache.names(proc).names[23] == "qemu-kvm"
    )
    assert 1 <= seen_after <= SWEEP_SCRAPES


def test_a_vm_pid_taken_by_another_program_is_seen_at_once(tmp_path: Path) -> None:
    proc = make_proc(tmp_path, {1: "systemd", 99: "qemu-kvm"})
    cache = ProcessNameCache(is_vm)
    for _ in range(3):
        cache.names(proc)
    rename(tmp_path, 99, "bash")
    assert cache.names(proc).names[99] == "bash"


def test_exited_processes_are_forgotten_and_a_missing_root_is_an_error(tmp_path: Path) -> None:
    proc = make_proc(tmp_path / "proc", {1: "systemd", 2: "qemu-kvm"})
    cache = ProcessNameCache(is_vm)
    cache.names(proc)
    (proc / "2" / "comm").unlink()
    (proc / "2").rmdir()
    assert cache.names(proc).names == {1: "systemd"}
    assert ProcessNameCache(is_vm).names(tmp_path / "nothing").error == "No such file or directory"
