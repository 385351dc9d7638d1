"""The container image, built from the Containerfile and run as deploy/kubernetes' DaemonSet
runs it: buildah under chroot isolation on a local Debian 13 base (tests/support/image.py),
the host's /sys and /proc mounted read-only where the DaemonSet mounts them, the
DaemonSet's arguments (listening on a loopback port of its own choosing instead of :9941),
/metrics scraped on loopback.

What a pod adds and this does not: the kubelet's probes, the read-only root file system,
the runtime's seccomp profile and cgroup limits (docs/install.md says so).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from ksm_exporter.experiment.ksm_settings import KsmSettings
from ksm_exporter.model.ksm_files import FILE_METRICS
from ksm_exporter.readers.sysfs_ksm import read_ksm
from tests.support import REAL_KSM, REPO, RunningExporter, wait_until
from tests.support.collect import vm_labels
from tests.support.image import Image, build_image, cannot_build, running
from tests.support.vm_process import QEMU_NAME, qemu_like_process

pytestmark = pytest.mark.packaging

DAEMONSET = REPO / "deploy" / "kubernetes" / "daemonset.yaml"
VM = "container-test-vm"
VM_UUID = str(uuid.uuid4())
VM_UID = 107  # the user virt-launcher runs qemu-kvm as
PAGES = 64  # under max_page_sharing (256): one KSM page shares them all
CAP_DAC_READ_SEARCH = 2


@dataclass(frozen=True)
class Pod:
    """What the DaemonSet says of its container."""

    image: str
    args: list[str]
    volumes: list[str]  # host:container:ro
    user: str
    capability: str


def daemonset_pod() -> Pod:
    spec = yaml.safe_load(DAEMONSET.read_text())["spec"]["template"]["spec"]
    assert spec["hostPID"] is True  # buildah's chroot isolation shares the host's, too
    [container] = spec["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    volumes = [
        f"{host_paths[m['name']]}:{m['mountPath']}:{'ro' if m.get('readOnly') else 'rw'}"
        for m in container["volumeMounts"]
    ]
    args = [a for a in container["args"] if not a.startswith("--web.listen-address=")]
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"], security
    [capability] = security["capabilities"]["add"]
    return Pod(
        container["image"],
        [*args, "--web.listen-address=127.0.0.1:0"],
        volumes,
        str(security["runAsUser"]),
        capability.lower(),
    )


@pytest.fixture(scope="module")
def pod() -> Pod:
    return daemonset_pod()


@pytest.fixture(scope="module")
def image(pod: Pod, tmp_path_factory: pytest.TempPathFactory) -> Image:
    why = cannot_build()
    if why:
        pytest.skip(why)
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    built = build_image(pod.image, log)
    took = time.monotonic() - started
    print(f"\n{built.name} built in {took:.0f} s: {built.size()}")
    return built


@pytest.fixture
def vm() -> Iterator[psutil.Process]:
    """A qemu-named process of another user (uid 107) with PAGES mergeable pages."""
    if not Path("/proc/self/ksm_stat").exists():
        pytest.skip("no /proc/PID/ksm_stat (Linux before 6.1)")
    args = ("-name", f"guest={VM},debug-threads=on", "-uuid", VM_UUID)
    with qemu_like_process(PAGES, QEMU_NAME, args, uid=VM_UID) as child:
        yield psutil.Process(child.pid)


def exporter_process(exporter: RunningExporter) -> psutil.Process:
    """The exporter inside the container: buildah run's descendant listening on the port."""
    for p in psutil.Process(exporter.proc.pid).children(recursive=True):
        if any(c.laddr.port == exporter.port for c in p.net_connections("tcp")):
            return p
    raise AssertionError(f"no process of the container listens on {exporter.port}")


def status_fields(p: psutil.Process) -> dict[str, str]:
    lines = Path(f"/proc/{p.pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_image_runs_as_a_non_root_user_without_capabilities_by_default(
    image: Image, pod: Pod, vm: psutil.Process, tmp_path: Path
) -> None:
    """Run with no user given (as `podman run` would), the image's USER applies: nobody,
    no capability. Every node-wide series is there; the VM of another user is found but
    its 0400 ksm_stat is not readable: its per-VM series are absent and counted."""
    assert image.user == "65534:65534", image.user
    with running(image, pod.args, pod.volumes, tmp_path) as exporter:
        status = status_fields(exporter_process(exporter))
        assert status["Uid"].split() == ["65534"] * 4 and status["CapEff"] == f"{0:016x}"
        exporter.ready()
        m = exporter.metrics()
        assert m["ksm_up"] == (1 if REAL_KSM.is_dir() else 0)
        labels = vm_labels(vm.pid, VM, uuid=VM_UUID)
        assert f"ksm_process_merging_pages{{{labels}}}" not in m
        assert m['ksm_process_read_errors_total{reason="unreadable"}'] >= 1


def stable_sysfs() -> dict[str, int] | None:
    """KSM's files, when two reads in a row agree (nothing changed in between)."""
    first, second = read_ksm(REAL_KSM), read_ksm(REAL_KSM)
    assert not first.errors, first.errors
    return first.values if first.values == second.values else None


@pytest.mark.kernel
def test_as_the_daemonset_runs_it_real_ksm_and_a_vm_of_another_user(
    image: Image, pod: Pod, vm: psutil.Process, real_ksm: KsmSettings, tmp_path: Path
) -> None:
    """As the DaemonSet's securityContext says: uid 0, CAP_DAC_READ_SEARCH alone, no new
    privileges. The per-VM series of the VM appear with its merged pages; the KSM series
    equal /sys/kernel/mm/ksm once ksmd stops; SIGTERM (what the kubelet sends) ends it
    with status 0."""
    real_ksm.write("run", 0)
    if (REAL_KSM / "advisor_mode").exists():
        real_ksm.write("advisor_mode", "none")  # else pages_to_scan is refused
    real_ksm.write("pages_to_scan", 5000)
    real_ksm.write("sleep_millisecs", 10)
    real_ksm.write("run", 1)
    with running(image, pod.args, pod.volumes, tmp_path, pod.user, pod.capability) as exporter:
        process = exporter_process(exporter)
        status = status_fields(process)
        assert status["Uid"].split() == ["0"] * 4, status["Uid"]
        only_cap = f"{1 << CAP_DAC_READ_SEARCH:016x}"
        assert status["CapEff"] == status["CapBnd"] == only_cap, status
        assert status["NoNewPrivs"] == "1"
        exporter.ready()
        merging = f"ksm_process_merging_pages{{{vm_labels(vm.pid, VM, uuid=VM_UUID)}}}"
        wait_until(
            lambda: exporter.metrics().get(merging) == PAGES,
            timeout=25,
            interval=0.2,
            what=f"{merging} = {PAGES}",
        )

        real_ksm.write("run", 0)  # ksmd stops: its files hold still
        wait_until(lambda: exporter.metrics()["ksm_run"] == 0, what="the exporter to see run 0")

        def equal() -> bool:
            before, m, after = stable_sysfs(), exporter.metrics(), stable_sysfs()
            if before is None or before != after:
                return False  # something else changed KSM meanwhile: look again
            expected = {
                f.name: before[f.file] / f.divisor for f in FILE_METRICS if f.file in before
            }
            assert {name: m.get(name) for name in expected} == expected
            return True

        wait_until(equal, what="KSM's files to hold still for a scrape")

        process.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(10) == 0, exporter.log()
