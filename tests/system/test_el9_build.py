"""EL9 (RHEL, Rocky, Alma 9) builds the package with its own toolchain: Python 3.9 and the
python3-setuptools 53.0, python3-wheel 0.36 and python3-pip 21.2 it ships, emulated in a
Python 3.9 venv holding exactly those versions (cached, tests/support/pythons.py).

The sdist comes from the build backend's own hook (EL9 has no `python -m build`; its RPM
takes Source0 from git archive instead), the wheel from the unpacked sdist with
`pip wheel --no-build-isolation`, as %pyproject_wheel runs it; both install with that pip
and the installed command serves `status` on a fixture tree. What this does not run: EL9's
rpmbuild and its macros (tests/system/test_packaging.py runs the spec on Debian's rpm), nor
EL9's or EPEL 9's own builds of the runtime modules (the venv has their lowest versions that
setup.cfg allows, from PyPI).
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ksm_exporter import __version__
from tests.support import FIXTURES, REPO, copy_checkout
from tests.support.pythons import cached_venv, interpreter

pytestmark = pytest.mark.packaging

# EL9's versions (RHEL 9: python3-setuptools-53.0.0, python3-wheel-0.36.2, python3-pip-21.2.3).
TOOLCHAIN = ("pip==21.2.3", "setuptools==53.0.0", "wheel==0.36.2")


def requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, REPO / "scripts" / "requirements.py", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def el9(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cached venv: Python 3.9, EL9's build tools, the runtime dependencies."""
    python = interpreter("3.9")
    if python is None:
        pytest.skip("no Python 3.9 (pyenv's or python3.9 on PATH): cannot emulate EL9")
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is missing: systemd-python cannot build (scripts/bootstrap)")
    log = tmp_path_factory.mktemp("el9") / "venv.log"
    try:
        return cached_venv(
            "el9-toolchain",
            python,
            # pip first, then the rest with that pip, as EL9 has them; the runtime modules
            # at the lowest versions setup.cfg allows.
            [[TOOLCHAIN[0]], list(TOOLCHAIN[1:]), requirements()],
            log,
            constraints="\n".join(requirements("--lower-bounds")) + "\n",
        )
    except subprocess.CalledProcessError:
        pytest.fail("cannot make the EL9 venv:\n" + log.read_text()[-3000:])


def run(*args: object, cwd: Path | None = None) -> str:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert r.returncode == 0, f"{args}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r.stdout


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        return email.parser.Parser().parsestr(
            z.read(f"ksm_exporter-{__version__}.dist-info/METADATA").decode()
        )


def serves_status(venv: Path, target: Path) -> None:
    """The installed command, on the venv's Python and modules, reads a fixture tree."""
    root = FIXTURES / "linux-6.18"
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    version = subprocess.run(
        [target / "bin" / "ksm-exporter", "--version"], capture_output=True, text=True, env=env
    )
    assert version.stdout.strip() == f"ksm-exporter {__version__}", version.stderr
    status = subprocess.run(
        [
            target / "bin" / "ksm-exporter",
            "status",
            f"--path.sysfs={root}/sys",
            f"--path.procfs={root}/proc",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=target,  # not the checkout: the module must come from the install
    )
    assert status.returncode == 0 and "KSM" in status.stdout, status.stdout + status.stderr
    first = (target / "bin" / "ksm-exporter").read_text().splitlines()[0]
    assert first.startswith(f"#!{venv}/bin/python"), first


def test_el9_toolchain_builds_and_installs_the_wheel_and_sdist(el9: Path, tmp_path: Path) -> None:
    python = el9 / "bin" / "python"
    versions = run(
        python,
        "-c",
        "import pip, setuptools, wheel; print(pip.__version__, "
        "setuptools.__version__, wheel.__version__)",
    )
    assert versions.split() == [v.split("==")[1] for v in TOOLCHAIN]
    assert run(python, "-c", "import sys; print(sys.version_info[:2])").strip() == "(3, 9)"

    src = copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    dist.mkdir()
    sdist_name = run(
        python,
        "-c",
        f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))",
        cwd=src,
    ).split()[-1]
    sdist = dist / sdist_name
    assert sdist.name == f"ksm-exporter-{__version__}.tar.gz"
    with tarfile.open(sdist) as t:
        t.extractall(tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked" / f"ksm-exporter-{__version__}"
    # What the RPM's %build runs: pip wheel, no isolation, the system's setuptools.
    run(python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
        "-w", dist, unpacked)  # fmt: skip
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"ksm_exporter-{__version__}-py3-none-any.whl"

    # setuptools 53 read all of setup.cfg: the same metadata a current setuptools writes.
    meta = metadata(wheel)
    assert meta["Name"] == "ksm-exporter" and meta["Version"] == __version__
    assert meta["Requires-Python"] == ">=3.9"
    runtime = [r for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r]
    assert [r.replace(" ", "").replace("(", "").replace(")", "") for r in runtime] == [
        r.replace(" ", "") for r in requirements()
    ]
    assert "Programming Language :: Python :: 3.9" in meta.get_all("Classifier", [])
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(f"ksm_exporter-{__version__}.dist-info/entry_points.txt").decode()
    module = {
        f"ksm_exporter/{p.relative_to(REPO / 'ksm_exporter')}"
        for p in (REPO / "ksm_exporter").rglob("*.py")
    }
    assert {n for n in names if n.endswith(".py")} == module
    assert "ksm-exporter = ksm_exporter.cli:main" in entry_points

    # Both install with EL9's pip and run on the venv's modules.
    for what, source in (("wheel", wheel), ("sdist", sdist)):
        target = tmp_path / f"from-{what}"
        run(python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
            "--target", target, source)  # fmt: skip
        serves_status(el9, target)
