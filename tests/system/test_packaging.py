"""packaging/: the systemd unit, the Debian package, the RPM spec, the wheel and sdist.

Each test runs the real tool (systemd-analyze, dpkg-buildpackage, rpmspec, rpmbuild,
python -m build) and skips, saying which, where that tool is missing; scripts/bootstrap
installs them all. rpmbuild runs with tests/rpm/macros.stand-in in place of Fedora's macro
packages, which Debian lacks. The .deb under a real systemd: tests/system/test_systemd_nspawn.py.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksm_exporter import __version__
from ksm_exporter.flags.serve import parser as serve_parser
from tests.support import FIXTURES, REPO, NotifySocket, copy_checkout, listening_process, wait_until
from tests.support.nspawn import built_deb
from tests.support.scripts import (
    HAVE_JSONNET,
    NO_JSONNET,
    RENDERED,
    RULES_FILE,
    render_mixin,
    run_render,
)

PACKAGING = REPO / "packaging"
UNIT = PACKAGING / "ksm-exporter.service"
PER_VM = PACKAGING / "ksm-exporter-per-vm.conf"
DEFAULTS = PACKAGING / "default" / "ksm-exporter"
SPEC = PACKAGING / "rpm" / "ksm-exporter.spec"
MAX_EXPOSURE = 1.5
STAND_IN_MACROS = REPO / "tests" / "rpm" / "macros.stand-in"
PYTHON_DIR = "/usr/lib/python3/dist-packages/"
DASHBOARD = REPO / "grafana" / "ksm-exporter.json"
RULES = REPO / "rules" / "ksm-exporter.rules.yml"
# What each package ships beside the Python module: path in the .deb -> path in the RPM.
SHIPPED = {
    "/usr/bin/ksm-exporter": "/usr/bin/ksm-exporter",
    "/lib/systemd/system/ksm-exporter.service": "/usr/lib/systemd/system/ksm-exporter.service",
    "/etc/default/ksm-exporter": "/etc/sysconfig/ksm-exporter",
    "/usr/share/ksm-exporter/ksm-exporter-per-vm.conf": (
        "/usr/share/ksm-exporter/ksm-exporter-per-vm.conf"
    ),
    "/usr/share/ksm-exporter/grafana/ksm-exporter.json": (
        "/usr/share/ksm-exporter/grafana/ksm-exporter.json"
    ),
    "/usr/share/ksm-exporter/rules/ksm-exporter.rules.yml": (
        "/usr/share/ksm-exporter/rules/ksm-exporter.rules.yml"
    ),
    # dh_compress gzips documentation.
    "/usr/share/doc/ksm-exporter/install.md.gz": "/usr/share/doc/ksm-exporter/install.md",
}
# The monitoring mixin and its renderer, for re-rendering with the operator's settings.
MIXIN = {
    f"/usr/share/ksm-exporter/mixin/{p.relative_to(REPO / 'mixin')}": p
    for p in sorted((REPO / "mixin").rglob("*"))
    if p.is_file()
}
SHIPPED.update({path: path for path in MIXIN})
RENDER = "/usr/share/ksm-exporter/mixin/render"
DEBIAN_ONLY = {"/usr/share/doc/ksm-exporter/changelog.gz", "/usr/share/doc/ksm-exporter/copyright"}

pytestmark = pytest.mark.packaging


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/bootstrap installs it)")
    return path


def run(*cmd: str | Path, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    # SYSTEMD_COLORS=0: plain text to parse; LC_ALL=C.UTF-8: the ✓/✗ marks stay as they are.
    env = {**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8", **kw.pop("env", {})}  # type: ignore[dict-item]
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )  # type: ignore[call-overload]


def directives(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, every value of a repeated key in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and line[0] not in "#;[" and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def verify(unit: Path) -> None:
    """`systemd-analyze verify` must pass without a single warning: it exits 0 even for
    an unknown key, so its output is checked too."""
    r = run(need("systemd-analyze"), "verify", unit)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def security(unit: Path) -> tuple[float, dict[str, bool]]:
    """Overall exposure and each check's name -> passed, from the offline security report."""
    r = run(need("systemd-analyze"), "security", "--offline=true", "--no-pager", unit)
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, r.stdout
    checks = {
        line[2:].split()[0]: line.startswith("✓")
        for line in r.stdout.splitlines()
        if line[:1] in ("✓", "✗")
    }
    return float(m.group(1)), checks


def unit_copy(tmp_path: Path, with_per_vm: bool = False) -> Path:
    """The unit with ExecStart's /usr/bin/ksm-exporter replaced by this environment's real
    console script, because verify checks that the binary exists; with_per_vm adds the
    opt-in drop-in beside it, where systemd-analyze looks for drop-ins."""
    script = Path(sys.executable).parent / "ksm-exporter"
    if not script.exists():
        found = shutil.which("ksm-exporter")
        if found is None:
            pytest.skip("no ksm-exporter console script here (pip install -e . installs one)")
        script = Path(found)
    text = UNIT.read_text()
    assert "\nExecStart=/usr/bin/ksm-exporter " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("\nExecStart=/usr/bin/ksm-exporter ", f"\nExecStart={script} "))
    if with_per_vm:
        dropins = tmp_path / f"{UNIT.name}.d"
        dropins.mkdir()
        shutil.copy(PER_VM, dropins / "per-vm.conf")
    return copy


def test_unit_verifies(tmp_path: Path) -> None:
    verify(unit_copy(tmp_path))


def test_unit_exposure_within_bound() -> None:
    exposure, checks = security(UNIT)
    assert exposure <= MAX_EXPOSURE
    for check in (
        "User=/DynamicUser=",
        "AmbientCapabilities=",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "PrivateUsers=",
        "ProtectKernelTunables=",
        "ProtectKernelModules=",
        "ProtectKernelLogs=",
        "SystemCallFilter=~@privileged",
        "RestrictAddressFamilies=~AF_PACKET",
        "RestrictAddressFamilies=~AF_NETLINK",
        "NotifyAccess=",
    ):
        assert checks.get(check) is True, check


def test_unit_runs_the_service_the_issue_asks_for() -> None:
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"] and d["WatchdogSec"]
    assert d["ConditionPathIsDirectory"] == ["/sys/kernel/mm/ksm"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["CapabilityBoundingSet"] == [""] and d["DynamicUser"] == ["yes"]
    # ksmd's stat, the ksmtuned process and qemu's RSS are world-readable once visible:
    # hiding other users' processes would turn those metrics into false zeros.
    assert d.get("ProtectProc", ["default"]) == ["default"] and "ProcSubset" not in d
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["EnvironmentFile"] == ["-/etc/default/ksm-exporter"]
    # The state file lives in the unit's StateDirectory, the one writable place.
    argv = shlex.split(d["ExecStart"][0])
    assert argv[0] == "/usr/bin/ksm-exporter" and argv[-1] == "$ARGS"
    args = serve_parser().parse_args(argv[1:-1])
    assert args.state_file.parent == Path("/var/lib") / d["StateDirectory"][0]
    # `systemctl reload` re-reads ARGS from the same file systemd took them from.
    assert d["EnvironmentFile"] == [f"-{args.reload_args_file}"]


def test_default_file_examples_are_real_flags() -> None:
    """ARGS="" is what ships; every commented ARGS="..." example must parse as serve flags."""
    text = DEFAULTS.read_text()
    assert re.search(r'^ARGS=""$', text, re.MULTILINE)
    examples = re.findall(r'^#\s+ARGS="([^"]+)"$', text, re.MULTILINE)
    assert len(examples) >= 3
    for example in examples:
        serve_parser().parse_args(shlex.split(example))


def test_per_vm_dropin_grants_only_dac_read_search(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path, with_per_vm=True)
    verify(unit)
    _, base = security(UNIT)
    _, opted = security(unit)
    changed = {name for name, passed in base.items() if opted.get(name) != passed}
    # Exactly the checks the drop-in is about: one capability, ambient, in the host's user
    # namespace (capabilities count only there).
    assert changed == {
        "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
        "AmbientCapabilities=",
        "PrivateUsers=",
    }
    d = directives(PER_VM.read_text())
    assert d["CapabilityBoundingSet"] == d["AmbientCapabilities"] == ["CAP_DAC_READ_SEARCH"]


def changelog_version() -> str:
    first = (PACKAGING / "debian" / "changelog").read_text().splitlines()[0]
    m = re.match(r"ksm-exporter \(([^)]+)\)", first)
    assert m, first
    return m.group(1)


def test_package_versions_follow_the_module() -> None:
    spec_version = re.search(r"^Version:\s+(\S+)$", SPEC.read_text(), re.MULTILINE)
    assert spec_version and spec_version.group(1) == __version__
    # A native Debian package: no Debian revision.
    assert changelog_version() == __version__


# --- RPM --------------------------------------------------------------------------------


def source_tarball(dest: Path, name: str) -> Path:
    """Source0 as the spec's header makes it, but from the working tree (uncommitted edits
    included, as scripts/build-deb takes them), so both packages are built from one tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    tarball = dest / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for f in filter(None, listed.split("\0")):
            if (REPO / f).exists():
                tar.add(REPO / f, f"{name}/{f}", recursive=False)
    return tarball


@pytest.fixture(scope="module")
def rpm_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`rpmbuild -ba` of the spec: its _topdir, with SRPMS/ and RPMS/noarch/ filled.

    Debian has no pyproject-rpm-macros or systemd-rpm-macros: tests/rpm/macros.stand-in
    stands in for them (--nodeps: the build requirements are Fedora package names)."""
    rpmbuild = need("rpmbuild")
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no file list for Source0")
    for module in ("build", "installer"):
        if run("/usr/bin/python3", "-c", f"import {module}").returncode != 0:
            pytest.skip(f"python3-{module} is not installed (scripts/bootstrap installs it)")
    top = tmp_path_factory.mktemp("rpmbuild")
    (top / "SOURCES").mkdir()
    source_tarball(top / "SOURCES", f"ksm-exporter-{__version__}")
    r = run(
        rpmbuild,
        "-ba",
        "--nodeps",
        "--load",
        STAND_IN_MACROS,
        "--define",
        f"_topdir {top}",
        SPEC,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return top


def test_rpm_spec_parses_and_builds(rpm_build: Path, tmp_path: Path) -> None:
    rpmspec = need("rpmspec")
    parsed = run(rpmspec, "--parse", SPEC)
    assert parsed.returncode == 0, parsed.stderr
    q = run(rpmspec, "-q", "--srpm", "--qf", "%{name} %{version}", SPEC)
    assert q.stdout == f"ksm-exporter {__version__}", q.stderr

    # The spec's own sed, applied to the unit, must give a unit that reads /etc/sysconfig.
    m = re.search(r"sed -i '([^']+)'", parsed.stdout)
    assert m, "no sed in the parsed spec"
    unit = unit_copy(tmp_path)
    subprocess.run(["sed", "-i", m.group(1), str(unit)], check=True)
    d = directives(unit.read_text())
    assert d["EnvironmentFile"] == ["-/etc/sysconfig/ksm-exporter"]
    assert "--reload.args-file=/etc/sysconfig/ksm-exporter" in d["ExecStart"][0]
    assert "/etc/default" not in unit.read_text()
    verify(unit)

    name = f"ksm-exporter-{__version__}-1"
    assert [p.name for p in (rpm_build / "SRPMS").iterdir()] == [f"{name}.src.rpm"]
    assert [p.name for p in (rpm_build / "RPMS" / "noarch").iterdir()] == [f"{name}.noarch.rpm"]


def payload(tar_bytes: bytes) -> dict[str, bytes]:
    """Path -> content of every regular file in a package's tar payload."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {
            "/" + m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def scriptlets(text: str) -> dict[str, str]:
    """`rpm -qp --scripts` output -> scriptlet name (postinstall, ...) -> body."""
    parts = re.split(r"^(\w+) scriptlet \(using [^)]*\):\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_rpm_ships_what_the_deb_ships(rpm_build: Path, deb_tools: None) -> None:
    rpm2archive = need("rpm2archive")
    rpm = next((rpm_build / "RPMS" / "noarch").iterdir())
    deb = built_deb()
    rpm_files = payload(
        subprocess.run(
            [rpm2archive, "-"], input=rpm.read_bytes(), capture_output=True, check=True
        ).stdout
    )
    deb_files = payload(
        subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
    )
    # rpm -qlp lists what rpm itself records; the payload must agree with it.
    listed = set(run("rpm", "-qlp", rpm).stdout.split())
    assert set(rpm_files) <= listed

    # Beside the Python module, exactly the same files, in each family's places.
    assert {p for p in deb_files if not p.startswith(PYTHON_DIR)} - DEBIAN_ONLY == set(SHIPPED)
    assert {p for p in rpm_files if not p.startswith(PYTHON_DIR)} == set(SHIPPED.values())
    rpm_unit = UNIT.read_text().replace("/etc/default/", "/etc/sysconfig/")
    expected = {
        "/lib/systemd/system/ksm-exporter.service": (UNIT.read_bytes(), rpm_unit.encode()),
        "/etc/default/ksm-exporter": (DEFAULTS.read_bytes(),) * 2,
        "/usr/share/ksm-exporter/ksm-exporter-per-vm.conf": (PER_VM.read_bytes(),) * 2,
        "/usr/share/ksm-exporter/grafana/ksm-exporter.json": (DASHBOARD.read_bytes(),) * 2,
        "/usr/share/ksm-exporter/rules/ksm-exporter.rules.yml": (RULES.read_bytes(),) * 2,
        **{path: (source.read_bytes(),) * 2 for path, source in MIXIN.items()},
    }
    for deb_path, (in_deb, in_rpm) in expected.items():
        assert deb_files[deb_path] == in_deb, deb_path
        assert rpm_files[SHIPPED[deb_path]] == in_rpm, SHIPPED[deb_path]
    install_md = (REPO / "docs" / "install.md").read_bytes()
    assert gzip.decompress(deb_files["/usr/share/doc/ksm-exporter/install.md.gz"]) == install_md
    assert rpm_files["/usr/share/doc/ksm-exporter/install.md"] == install_md
    for files in (deb_files, rpm_files):
        script = files["/usr/bin/ksm-exporter"].decode()
        assert script.startswith("#!/usr/bin/python3") and "ksm_exporter.cli" in script

    # The same Python module, every file of it.
    module = {
        f"ksm_exporter/{p.relative_to(REPO / 'ksm_exporter')}"
        for p in (REPO / "ksm_exporter").rglob("*.py")
    }
    for files in (deb_files, rpm_files):
        shipped = {p.removeprefix(PYTHON_DIR) for p in files if p.endswith(".py")}
        assert shipped == module

    # The renderer runs as shipped.
    deb_modes = {
        line.split()[-1].removeprefix("."): line.split()[0]
        for line in run("dpkg-deb", "-c", deb).stdout.splitlines()
    }
    assert deb_modes[RENDER] == "-rwxr-xr-x"
    rpm_modes = {
        line.split()[-1]: line.split()[0] for line in run("rpm", "-qlvp", rpm).stdout.splitlines()
    }
    assert rpm_modes[RENDER] == "-rwxr-xr-x"

    # The settings file is the one configuration file, kept on upgrade in both.
    assert run("rpm", "-qp", "--configfiles", rpm).stdout.split() == ["/etc/sysconfig/ksm-exporter"]
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True)
    deb_control = payload(control.stdout)
    assert deb_control["/conffiles"].decode().split() == ["/etc/default/ksm-exporter"]

    # The same life cycle: not enabled at install, stopped at removal, restarted on upgrade.
    scripts = scriptlets(run("rpm", "-qp", "--scripts", rpm).stdout)
    assert set(scripts) == {"postinstall", "preuninstall", "postuninstall"}
    assert scripts["postinstall"].split() == [":", "systemd_post", "ksm-exporter.service"]
    assert scripts["preuninstall"].split() == [":", "systemd_preun", "ksm-exporter.service"]
    assert scripts["postuninstall"].split() == [
        ":",
        "systemd_postun_with_restart",
        "ksm-exporter.service",
    ]
    postinst = deb_control["/postinst"].decode()
    assert "deb-systemd-helper --quiet was-enabled 'ksm-exporter.service'" in postinst
    assert "_dh_action=restart" in postinst
    assert "deb-systemd-invoke stop 'ksm-exporter.service'" in deb_control["/prerm"].decode()


# --- Debian -----------------------------------------------------------------------------


def dpkg_status(package: str) -> str:
    r = run("dpkg-query", "-W", "-f=${Status}", package)
    return r.stdout if r.returncode == 0 else ""


@pytest.fixture
def deb_tools() -> None:
    for tool in ("dpkg-buildpackage", "dh", "dpkg", "git"):
        need(tool)
    missing = [
        p
        for p in ("debhelper", "dh-python", "pybuild-plugin-pyproject", "python3-all")
        if "ok installed" not in dpkg_status(p)
    ]
    if missing:
        pytest.skip(f"missing build dependencies: {' '.join(missing)} (scripts/bootstrap)")


@pytest.fixture
def installed_deb(deb_tools: None) -> Iterator[Path]:
    """Build the .deb, install it, yield its path; purge it afterwards, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root")
    if dpkg_status("ksm-exporter") or Path("/usr/bin/ksm-exporter").exists():
        pytest.skip("ksm-exporter is already installed on this machine: not replacing it")
    deb = built_deb()
    try:
        r = run("dpkg", "-i", deb, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        yield deb
    finally:
        purge = run("dpkg", "--purge", "ksm-exporter", timeout=120)
        assert purge.returncode == 0, purge.stdout + purge.stderr


def test_deb_installs_runs_and_purges(installed_deb: Path, tmp_path: Path) -> None:
    # Nothing world-writable in the package (symlinks are lrwxrwxrwx by nature).
    listing = run("dpkg-deb", "-c", installed_deb).stdout.splitlines()
    assert listing
    assert [line for line in listing if line[0] != "l" and line[8] == "w"] == []

    version = run("/usr/bin/ksm-exporter", "--version")
    assert version.stdout.strip() == f"ksm-exporter {__version__}", version.stderr

    units = [
        Path(d) / "ksm-exporter.service" for d in ("/lib/systemd/system", "/usr/lib/systemd/system")
    ]
    unit = next((u for u in units if u.exists()), None)
    assert unit is not None and unit.read_text() == UNIT.read_text()
    verify(unit)
    assert Path("/etc/default/ksm-exporter").read_text() == DEFAULTS.read_text()
    assert Path("/usr/share/ksm-exporter/ksm-exporter-per-vm.conf").read_text() == (
        PER_VM.read_text()
    )
    conffiles = Path("/var/lib/dpkg/info/ksm-exporter.conffiles").read_text().split()
    assert conffiles == ["/etc/default/ksm-exporter"]
    # Installed, not enabled: the operator decides.
    if shutil.which("systemctl"):
        assert run("systemctl", "is-enabled", "ksm-exporter.service").stdout.strip() == "disabled"

    # The installed daemon, on Debian's python3 and its prometheus-client, psutil and
    # systemd modules, serves a fixture tree and tells its NOTIFY_SOCKET what the unit's
    # Type=notify waits for.
    root = FIXTURES / "linux-6.18"
    notify = NotifySocket(tmp_path / "notify")
    command = [
        "/usr/bin/ksm-exporter",
        "--web.listen-address=127.0.0.1:0",
        f"--path.sysfs={root}/sys",
        f"--path.procfs={root}/proc",
    ]
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    try:
        with listening_process(
            command, tmp_path, "installed", env=env, cwd=tmp_path, timeout=20
        ) as exporter:
            status, body = exporter.get("/metrics")
            assert status == 200 and "\nksm_up 1.0\n" in body, exporter.log()
            wait_until(lambda: notify.port_open_at_ready is not None, what="READY=1")
            assert notify.port_open_at_ready, notify.texts()
            assert notify.ports_at_ready == {exporter.port}, notify.ports_at_ready
            wait_until(
                lambda: "KSM stopped, 11 MB saved, 0 transitions since start" in notify.statuses(),
                what="STATUS from the installed exporter",
            )
            exporter.proc.send_signal(signal.SIGTERM)
            assert exporter.proc.wait(10) == 0, exporter.log()
    finally:
        notify.close()
    assert notify.texts()[-1] == "STOPPING=1\nSTATUS=stopping"

    purge = run("dpkg", "--purge", "ksm-exporter", timeout=120)
    assert purge.returncode == 0, purge.stderr
    for path in ("/usr/bin/ksm-exporter", "/etc/default/ksm-exporter", str(unit)):
        assert not Path(path).exists(), path


# --- wheel and sdist ----------------------------------------------------------------------


def test_packaged_renderer_writes_rules_and_dashboard_with_the_users_settings(
    deb_tools: None, tmp_path: Path
) -> None:
    """The renderer the .deb ships, run from the package's own copy of the mixin (no
    repository, no make, only jsonnet), writes for an operator's configuration what the
    repository's mixin renders for it."""
    if not HAVE_JSONNET:
        pytest.skip(NO_JSONNET)
    root = tmp_path / "root"
    extract = run("dpkg-deb", "-x", built_deb(), root)
    assert extract.returncode == 0, extract.stderr
    config = {
        "ksmSelector": 'job="kvm-nodes"',
        "ksmClusterLabel": "region",
        "ksmFlappingThreshold": 6,
        "ksmSeverities": {"KsmFlapping": "critical"},
        "ksmRunbookURLPattern": "https://wiki.example.org/ksm#%s",
    }
    packaged = run_render(tmp_path / "packaged", config, render=root / RENDER.lstrip("/"))
    assert packaged.returncode == 0, packaged.stderr
    written = {rel: (tmp_path / "packaged" / rel).read_text() for rel in RENDERED}
    assert written == render_mixin(tmp_path / "repository", config)
    rules = written[RULES_FILE]
    assert 'job="kvm-nodes"' in rules and 'job="ksm-exporter"' not in rules
    assert "sum by (job, region)" in rules and "severity: 'critical'" in rules
    assert "https://wiki.example.org/ksm#ksmflapping" in rules


def test_python_build_makes_wheel_and_sdist(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the `build` package is in the test extra")
    src = copy_checkout(tmp_path / "src")
    out = tmp_path / "dist"
    # The default: the sdist first, then the wheel from the unpacked sdist, so a file
    # missing from the sdist breaks the wheel too.
    r = run(sys.executable, "-m", "build", "--outdir", out, src, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    assert wheel.name == f"ksm_exporter-{__version__}-py3-none-any.whl"

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"ksm_exporter-{__version__}.dist-info"
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    assert {"ksm_exporter/cli.py", "ksm_exporter/commands/serve.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    assert re.search(r"^ksm-exporter = ksm_exporter\.cli:main$", entry_points, re.MULTILINE)
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)", metadata, re.MULTILINE)
    assert {"prometheus-client", "psutil", "systemd-python"} <= set(requires)

    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    # Whoever builds from the sdist gets the unit, the settings file and the packaging.
    assert {
        "ksm_exporter/cli.py",
        "packaging/ksm-exporter.service",
        "packaging/default/ksm-exporter",
        "packaging/ksm-exporter-per-vm.conf",
        "packaging/debian/control",
        "packaging/rpm/ksm-exporter.spec",
        "docs/install.md",
        # and what the spec installs beside the module: the rendered rules and dashboard,
        # the mixin and its renderer.
        "rules/ksm-exporter.rules.yml",
        "grafana/ksm-exporter.json",
        "mixin/mixin.libsonnet",
        "mixin/render",
    } <= members
