"""deploy/kubernetes/ and the Containerfile: the manifests validate against the Kubernetes
schemas (kubernetes-validate, offline) and prometheus-operator's ServiceMonitor CRD, say
what the exporter needs, and the exporter runs as the DaemonSet runs it: the host's /sys
and /proc, uid 0 holding CAP_DAC_READ_SEARCH alone, no new privileges."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ksm_exporter import __version__
from ksm_exporter.flags import serve as serve_flags
from tests.support import FIXTURES, REPO, listening_process, parse_samples, wait_until

DEPLOY = REPO / "deploy" / "kubernetes"
SERVICEMONITOR_SCHEMA = FIXTURES / "kubernetes" / "servicemonitor-v1.schema.json"
KUBERNETES = "1.33.0"  # the oldest release still maintained upstream


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind in deploy/kubernetes/."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']}s"
            out[doc["kind"]] = doc
    return out


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused, as kubernetes-validate's strict mode does
    for core kinds (a CRD's server prunes them silently: a typo would be lost)."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] == "ServiceMonitor":
        schema = closed(json.loads(SERVICEMONITOR_SCHEMA.read_text()))
        jsonschema.Draft202012Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_every_manifest_validates() -> None:
    objects = manifests()
    assert sorted(objects) == ["DaemonSet", "Service", "ServiceMonitor"]
    for obj in objects.values():
        validate(obj)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("DaemonSet", ["spec", "template", "spec", "hostPid"], True),  # a typo
        (
            "DaemonSet",
            ["spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"],
            "x",
        ),
        ("Service", ["spec", "ports", 0, "port"], "metrics"),
        ("ServiceMonitor", ["spec", "endpoints", 0, "scrapeInterval"], "30s"),  # not a field
        ("ServiceMonitor", ["spec", "endpoints", 0, "relabelings", 0, "action"], "rename"),
    ],
)
def test_validation_catches_a_mistake(kind: str, path: list[Any], value: object) -> None:
    obj = copy.deepcopy(manifests()[kind])
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)


def daemonset_container() -> tuple[dict[str, Any], dict[str, Any]]:
    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def test_the_daemonset_gives_the_exporter_what_it_reads_and_no_more() -> None:
    pod, c = daemonset_container()
    args = serve_flags.parser().parse_args(c["args"])  # the exporter takes its flags
    assert pod["hostPID"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for flag_value, host in ((args.sysfs, "/sys"), (args.procfs, "/proc")):
        mount = mounts[str(flag_value)]
        assert mount["readOnly"] is True and volumes[mount["name"]] == host
    security = c["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert set(c["resources"]) == {"requests", "limits"}
    port = int(args.listen_address.rsplit(":", 1)[1])
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert c["image"] == f"ksm-exporter:{__version__}"


def test_service_and_servicemonitor_reach_the_pods() -> None:
    objects = manifests()
    pod_labels = objects["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


# --- the exporter as the pod runs it --------------------------------------------------------

# A VM of another user (nobody), named kvm, with a Proxmox VE option on its command line.
NOBODY_VM = (
    "import ctypes, sys, time; ctypes.CDLL(None).prctl(15, b'kvm', 0, 0, 0); "
    "print('ready', flush=True); sys.stdin.read()"
)


def run_as_the_pod(bounding: str, tmp: Path) -> dict[str, float]:
    """The exporter with the DaemonSet's flags (the host's /sys and /proc are this
    machine's own), as uid 0 with only the capabilities in `bounding`, no new privileges;
    what its probe path and one scrape say."""
    _, c = daemonset_container()
    args = [a.replace("/host/", "/") for a in c["args"] if "listen-address" not in a]
    setpriv = [
        "setpriv",
        "--no-new-privs",
        "--inh-caps=-all",
        f"--bounding-set=-all{bounding}",
        "--",
    ]
    command = [*setpriv, sys.executable, "-m", "ksm_exporter", *args]
    with listening_process([*command, "--web.listen-address=127.0.0.1:0"], tmp, "pod") as exporter:

        def healthy() -> bool:
            assert exporter.proc.poll() is None, exporter.log()
            try:
                return exporter.get("/-/healthy")[0] == 200
            except OSError:
                return False

        wait_until(healthy, timeout=20, what="the readiness probe to pass")
        status, body = exporter.get("/metrics")
        assert status == 200
        return parse_samples(body)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="root, setpriv")
def test_cap_dac_read_search_alone_reads_another_users_vm(tmp_path: Path) -> None:
    if not Path("/proc/self/ksm_stat").exists():
        pytest.skip("no /proc/PID/ksm_stat (Linux before 6.1)")
    vm = subprocess.Popen(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            NOBODY_VM,
            "-id",
            "4242",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert vm.stdout is not None and vm.stdout.readline() == "ready\n"
        series = (
            f'ksm_process_merging_pages{{namespace="",pid="{vm.pid}",uuid="",vm="kvm",vmid="4242"}}'
        )
        with_cap = run_as_the_pod(",+dac_read_search", tmp_path)
        assert with_cap[series] == 0
        without = run_as_the_pod("", tmp_path)  # the same pod without the capability
        assert series not in without
        assert without['ksm_process_read_errors_total{reason="unreadable"}'] >= 1
    finally:
        assert vm.stdin is not None
        vm.stdin.close()
        vm.wait(10)


# --- the Containerfile -----------------------------------------------------------------------


def test_containerfile_builds_from_the_projects_wheel(tmp_path: Path) -> None:
    """What the build stage copies is enough to build the wheel (run here with `build`,
    as no container tool runs on this machine: docs/install.md), and the image runs the
    console script of that wheel."""
    text = (REPO / "Containerfile").read_text()
    copies = [
        line.split()[1:-1]
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    context = tmp_path / "context"
    context.mkdir()
    for sources in copies:
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, context / source)
    assert "RUN pip wheel --no-cache-dir --wheel-dir /wheels ." in text
    assert 'ENTRYPOINT ["ksm-exporter"]' in text
    pytest.importorskip("build", reason="the `build` package is in the test extra")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "out"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    [wheel] = (tmp_path / "out").glob("ksm_exporter-*.whl")
    assert wheel.name.startswith(f"ksm_exporter-{__version__}-")
