"""deploy/kubernetes/: the manifests validate against the Kubernetes
schemas (kubernetes-validate, offline) and prometheus-operator's ServiceMonitor and
PrometheusRule CRDs, say what the exporter needs, the target labels Prometheus Operator
gives the ServiceMonitor's targets are what every rule and dashboard query selects, and
the exporter runs as the DaemonSet runs it: the host's /sys and /proc, uid 0 holding
CAP_DAC_READ_SEARCH alone, no new privileges."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ksm_exporter import __version__
from ksm_exporter.flags import serve as serve_flags
from tests.support import FIXTURES, REPO, http_get, listening_process, wait_until
from tests.support.dashboard_queries import all_queries, fill, load_dashboard
from tests.support.prometheus import PROMETHEUS, run_server
from tests.support.scripts import RULES_FILE, default_config

DEPLOY = REPO / "deploy" / "kubernetes"
SCHEMAS = {
    kind: FIXTURES / "kubernetes" / f"{kind.lower()}-v1.schema.json"
    for kind in ("ServiceMonitor", "PrometheusRule")
}
OPERATOR_RELABELING = FIXTURES / "kubernetes" / "prometheus-operator-servicemonitor-relabeling.yaml"
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
    if obj["kind"] in SCHEMAS:
        schema = closed(json.loads(SCHEMAS[obj["kind"]].read_text()))
        jsonschema.Draft202012Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_every_manifest_validates() -> None:
    objects = manifests()
    assert sorted(objects) == ["DaemonSet", "PrometheusRule", "Service", "ServiceMonitor"]
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
        ("ServiceMonitor", ["spec", "joblabel"], "app.kubernetes.io/name"),  # a typo
        ("PrometheusRule", ["spec", "groups", 1, "rules", 0, "for"], "an hour"),
        ("PrometheusRule", ["spec", "groups", 1, "rules", 0, "severity"], "warning"),
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


# --- the labels Prometheus Operator gives the targets, and what the rules select ------------


def sanitize(name: str) -> str:
    """Prometheus Operator's sanitizeLabelName."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def operator_relabeling(objects: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The relabel_configs Prometheus Operator generates for the ServiceMonitor's endpoint
    (the fixture's transcription of its source), then the endpoint's own relabelings."""
    monitor = objects["ServiceMonitor"]["spec"]
    [endpoint] = monitor["endpoints"]
    fixture = yaml.safe_load(OPERATOR_RELABELING.read_text())
    keeps = [
        {
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_service_label_{sanitize(k)}",
                f"__meta_kubernetes_service_labelpresent_{sanitize(k)}",
            ],
            "regex": f"({v});true",
        }
        for k, v in sorted(monitor["selector"]["matchLabels"].items())
    ]
    out: list[dict[str, Any]] = []
    for rule in fixture["relabel_configs"]:
        if rule == "{selector_keeps}":
            out += keeps
            continue
        text = json.dumps(rule).replace("{port}", endpoint["port"])
        if "{job_label}" in text:
            if not monitor.get("jobLabel"):
                continue
            text = text.replace("{job_label}", sanitize(monitor["jobLabel"]))
        out.append(json.loads(text))
    snake = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    out += [{snake.get(k, k): v for k, v in r.items()} for r in endpoint.get("relabelings", [])]
    return out


def discovered(objects: dict[str, dict[str, Any]], node: str) -> dict[str, str]:
    """The meta labels Kubernetes service discovery (role endpointslice) gives the
    DaemonSet's pod on `node` behind the Service."""
    service = objects["Service"]
    pod = objects["DaemonSet"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    name = f"{objects['DaemonSet']['metadata']['name']}-x7k2p"
    meta = {
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpointslice_port_name": service["spec"]["ports"][0]["name"],
        "__meta_kubernetes_endpointslice_address_target_kind": "Pod",
        "__meta_kubernetes_endpointslice_address_target_name": name,
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_phase": "Running",
    }
    for k, v in service["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_service_label_{sanitize(k)}"] = v
        meta[f"__meta_kubernetes_service_labelpresent_{sanitize(k)}"] = "true"
    for k, v in pod["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
    return meta


def renamed_service(jobLabel: bool) -> dict[str, dict[str, Any]]:
    """The manifests with the Service renamed, the ServiceMonitor's jobLabel kept or not."""
    objects = copy.deepcopy(manifests())
    objects["Service"]["metadata"]["name"] = "kvm-ksm"
    if not jobLabel:
        del objects["ServiceMonitor"]["spec"]["jobLabel"]
    return objects


_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def unselected(expr: str, labels: dict[str, str], cluster_label: str) -> list[str]:
    """The vector selectors of expr whose matchers on target labels (and on the cluster
    label, absent here) refuse `labels`; every selector must match on job."""
    refused = []
    for selector in re.findall(r"\{[^}]*\}", expr):
        judged = set()
        for label, op, quoted in _MATCHER.findall(selector):
            if label not in labels and label != cluster_label:
                continue  # a series label (state, cause...), not the target's
            value = quoted.replace("\\\\", "\\").replace('\\"', '"')
            have = labels.get(label, "")
            ok = {
                "=": have == value,
                "!=": have != value,
                "=~": re.fullmatch(value, have) is not None,
                "!~": re.fullmatch(value, have) is None,
            }[op]
            judged.add(label)
            if not ok:
                refused.append(f"{selector} ({label}={have!r})")
        if "job" not in judged:
            refused.append(f"{selector} (no job matcher)")
    return refused


@pytest.mark.skipif(not Path(PROMETHEUS).is_file(), reason="prometheus not installed (Debian)")
def test_operator_target_labels_are_what_every_rule_and_query_selects(tmp_path: Path) -> None:
    """A real Prometheus relabels the pod's discovered labels with the relabel_configs
    Prometheus Operator generates for the ServiceMonitor (as shipped; with the Service
    renamed; renamed without jobLabel): every rule and dashboard selector picks the
    shipped target, and the default selector reads it in PromQL."""
    fixture = yaml.safe_load(OPERATOR_RELABELING.read_text())
    assert "the `job` label of the metrics defaults to the name" in (
        " ".join(fixture["quote_servicemonitor_types_go"].replace("//", "").split())
    )
    assert (
        '"__meta_kubernetes_service_label_" + sanitizeLabelName(m.Spec.JobLabel)'
        in (fixture["quote_promcfg_go"])
    )
    cases = {
        "shipped": manifests(),
        "renamed": renamed_service(jobLabel=True),
        "renamed-no-joblabel": renamed_service(jobLabel=False),
    }
    (tmp_path / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "500ms"},
                "scrape_configs": [
                    {
                        "job_name": f"serviceMonitor/{case}",
                        "file_sd_configs": [{"files": [f"{case}.json"]}],
                        "relabel_configs": operator_relabeling(objects),
                    }
                    for case, objects in cases.items()
                ],
            }
        )
    )
    for case, objects in cases.items():
        # Port 9 on loopback refuses: the targets are down, their labels all the same.
        group = {"targets": ["127.0.0.1:9"], "labels": discovered(objects, "compute-1")}
        (tmp_path / f"{case}.json").write_text(json.dumps([group]))
    args = [
        PROMETHEUS,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
    ]
    config = default_config()
    selector = config["ksmSelector"]
    with run_server("prometheus", args, tmp_path) as address:

        def api(path: str) -> Any:
            status, body = http_get(f"http://{address}/api/v1/{path}")
            assert status == 200, body
            return json.loads(body)["data"]

        def targets() -> dict[str, dict[str, str]]:
            active = api("targets?state=active")["activeTargets"]
            return {t["scrapePool"].split("/", 1)[1]: t["labels"] for t in active}

        wait_until(lambda: len(targets()) == 3, timeout=20, what="three active targets")
        labels = targets()
        query = urllib.parse.quote(f"up{{{selector}}}")
        # Once every target was scraped: up for the two selected, not the third.
        wait_until(
            lambda: len(api("query?query=up")["result"]) == 3, timeout=20, what="the scrapes"
        )
        up = [s["metric"] for s in api(f"query?query={query}")["result"]]
    shipped = labels["shipped"]
    assert shipped == {
        "job": "ksm-exporter",
        "instance": "compute-1",
        "namespace": "monitoring",
        "service": "ksm-exporter",
        "pod": "ksm-exporter-x7k2p",
        "container": "ksm-exporter",
        "endpoint": "metrics",
    }
    assert sorted(up, key=lambda m: m["service"]) == [
        {"__name__": "up", **shipped},
        {"__name__": "up", **labels["renamed"]},
    ]
    assert labels["renamed"]["job"] == "ksm-exporter"  # jobLabel, whatever the name
    assert labels["renamed-no-joblabel"]["job"] == "kvm-ksm"

    cluster = config["ksmClusterLabel"]
    rules = yaml.safe_load((REPO / RULES_FILE).read_text())["groups"]
    exprs = {r.get("alert") or r["record"]: r["expr"] for g in rules for r in g["rules"]}
    for q in all_queries(load_dashboard()):
        # The dashboard as it opens: the job and cluster variables at All, this node.
        all_jobs = q.expr.replace('job=~"$job"', 'job=~".+"')
        exprs[q.where] = fill(all_jobs, [], [shipped["instance"]], cluster=(cluster, ".*"))
    assert len(exprs) > 70
    for where, expr in exprs.items():
        assert unselected(expr, shipped, cluster) == [], where
        assert unselected(expr, labels["renamed"], cluster) == [], where
    # The check sees a target the rules do not select.
    assert unselected(exprs["KsmExporterDown"], labels["renamed-no-joblabel"], cluster)


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
        exporter.ready()
        return exporter.metrics()


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
