"""Other Pythons than the suite's own: pyenv's interpreters (or pythonX.Y on PATH), and venvs
of them cached under /var/cache/ksm-exporter-tests keyed by a hash of what goes into them.
scripts/test-pythons finds interpreters the same way for the unit tier."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.nspawn import CACHE

MAX_AGE = 7 * 24 * 3600  # a week, as the rootfs: newer releases of what is not pinned


def interpreter(version: str) -> Path | None:
    """The newest pyenv Python X.Y.*, else pythonX.Y on PATH (not pyenv's shim)."""
    root = os.environ.get("PYENV_ROOT", "")
    if shutil.which("pyenv"):
        r = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        root = r.stdout.strip() or root
    found = []
    if root and (Path(root) / "versions").is_dir():
        for d in (Path(root) / "versions").iterdir():
            m = re.fullmatch(re.escape(version) + r"\.(\d+)", d.name)
            if m and (d / "bin" / f"python{version}").exists():
                found.append((int(m.group(1)), d / "bin" / f"python{version}"))
    if found:
        return max(found)[1]
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.endswith("/shims")
    )
    which = shutil.which(f"python{version}", path=path)
    return Path(which) if which else None


def cached_venv(
    name: str, python: Path, installs: Sequence[Sequence[str]], log: Path, constraints: str = ""
) -> Path:
    """A venv of `python` with each `pip install` argument list in `installs` run in turn
    (by the venv's own pip as it stands then) under `constraints` (a constraints file's
    text), cached as CACHE/NAME-<hash of the inputs>. Rebuilt when missing or a week old;
    one build at a time."""
    version = subprocess.run([python, "-VV"], capture_output=True, text=True, check=True).stdout
    key = "\n".join((str(python), version, constraints, *("\0".join(i) for i in installs))).encode()
    venv = CACHE / f"{name}-{hashlib.sha256(key).hexdigest()[:16]}"
    stamp = venv / ".complete"

    def fresh() -> bool:
        return stamp.exists() and time.time() - stamp.stat().st_mtime < MAX_AGE

    if fresh():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh():
            return venv
        for old in CACHE.glob(f"{name}-*"):
            shutil.rmtree(old, ignore_errors=True)
        with open(log, "w") as out:
            subprocess.run([python, "-m", "venv", venv], stdout=out, stderr=out, check=True)
            (venv / "constraints.txt").write_text(constraints)
            pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
            for args in installs:
                subprocess.run(
                    [*pip, "-c", venv / "constraints.txt", *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=900,
                )
        stamp.touch()
    return venv
