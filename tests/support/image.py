"""The container image of the Containerfile, built and run with buildah under chroot
isolation: no daemon, no OCI runtime and no container registry.

The Containerfile's default base, the public python:3.13-slim-trixie, comes from a
registry; in its place the build gets a base made here: Debian 13 from mmdebstrap with
python3 and its venv module (what the Containerfile asks of a base), turned into a local
image by `FROM scratch` + `ADD` of the rootfs tarball. The build reaches Debian's archive
(the compiler for systemd-python) and PyPI (the project's dependencies), nothing else.

Cached under /var/cache/ksm-exporter-tests/: buildah's storage of its own (buildah/), with
the base image, tagged by a hash of what goes into it and rebuilt after a week as the
nspawn rootfs is (tests/support/nspawn.py), and the build's layers, so an unchanged
checkout builds from cache and a changed one runs only its last build step.

Run as a script it builds (or reuses) the image under the name the DaemonSet gives it and
prints that name, its size and the time:
    python -m tests.support.image
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ksm_exporter import __version__
from tests.support import REPO, RunningExporter, listening_process
from tests.support.nspawn import CACHE, cached_tree, fresh, mirrors, mmdebstrap

STORAGE = CACHE / "buildah"
RUNROOT = Path("/run/ksm-exporter-tests/buildah")  # buildah's locks and mounts: gone at boot
BUILDAH = ("buildah", f"--root={STORAGE}", f"--runroot={RUNROOT}")
# The Debian release of the Containerfile's default base (python:3.13-slim-trixie).
BASE_SUITE = "trixie"
BASE_PACKAGES = ("python3", "python3-venv")
BASE_CONTAINERFILE = """FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]
"""
# What this machine trusts, pip in the build too (a TLS-intercepting proxy's CA, where
# one stands between the machine and PyPI): mounted for the build's RUN steps only.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def cannot_build() -> Optional[str]:
    """Why the image cannot be built and run here, or None when it can."""
    if shutil.which("buildah") is None:
        return "buildah is not installed (scripts/bootstrap installs it)"
    if os.geteuid() != 0:
        return "buildah's chroot isolation and mmdebstrap --mode=root need root"
    for tool in ("mmdebstrap", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap installs it)"
    return None


def buildah(
    *args: str, timeout: float = 60, log: Optional[Path] = None
) -> subprocess.CompletedProcess[str]:
    """buildah on the tests' own storage; its output appended to `log` when given."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "a")) if log else subprocess.PIPE
        r = subprocess.run(
            [*BUILDAH, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    if r.returncode != 0:
        where = f"see {log}" if log else r.stdout
        raise AssertionError(f"buildah {' '.join(args)} exited {r.returncode}: {where}")
    return r


def image_exists(name: str) -> bool:
    r = subprocess.run([*BUILDAH, "inspect", "--type=image", name], capture_output=True, text=True)
    return r.returncode == 0


def base_image(log: Optional[Path] = None) -> str:
    """The local base image, built first when missing or a week old."""
    key = ("v1", BASE_SUITE, *mirrors(BASE_SUITE), *sorted(BASE_PACKAGES), BASE_CONTAINERFILE)
    cached = cached_tree("image-base", key)  # a stamp file beside it: the image is in STORAGE
    name = f"localhost/ksm-exporter-test-base:{cached.name.rpartition('-')[2]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh(cached) and image_exists(name):
            return name
        with tempfile.TemporaryDirectory(prefix="image-base-", dir=CACHE) as context:
            mmdebstrap(BASE_SUITE, BASE_PACKAGES, Path(context) / "rootfs.tar", log, "--format=tar")
            Path(context, "Containerfile").write_text(BASE_CONTAINERFILE)
            buildah(
                "bud", "--isolation=chroot", "--force-rm", "-t", name, context, timeout=600, log=log
            )
        # Once a week, then, the images no name points to go: the build cache of older
        # checkouts (about 20 MB each), and the former base once nothing uses it.
        buildah("rmi", "--prune", timeout=300, log=log)
        cached.with_name(cached.name + ".built").touch()
    return name


@dataclass(frozen=True)
class Image:
    name: str
    base: str
    user: str
    entrypoint: list[str]

    def size(self) -> str:
        """Its size and its base's, as `buildah images` prints them."""
        sizes = [
            buildah("images", "--format={{.Size}}", name).stdout.strip()
            for name in (self.name, self.base)
        ]
        return f"{sizes[0]} (its base {sizes[1]})"


def build_image(name: str, log: Optional[Path] = None) -> Image:
    """`buildah bud` of the Containerfile at the top of the checkout, on the local base."""
    base = base_image(log)
    with tempfile.TemporaryDirectory(prefix="pip-conf-") as conf:
        volumes: list[str] = []
        if HOST_CA.exists():
            shutil.copy(HOST_CA, Path(conf) / "ca.crt")
            Path(conf, "pip.conf").write_text("[global]\ncert = /etc/xdg/pip/ca.crt\n")
            volumes = [f"--volume={conf}:/etc/xdg/pip:ro"]
        buildah(
            "bud",
            "--isolation=chroot",
            "--force-rm",  # a failed step's container goes too, not only a finished build's
            "--layers",
            "--pull=never",  # the base is local; no registry is asked
            f"--build-arg=BASE={base}",
            *volumes,
            f"--file={REPO / 'Containerfile'}",
            f"--tag={name}",
            str(REPO),
            timeout=1200,
            log=log,
        )
    config = json.loads(buildah("inspect", "--type=image", name).stdout)["OCIv1"]["config"]
    return Image(name, base, config.get("User", ""), config["Entrypoint"])


_containers = itertools.count()


def _only_capability(keep: str) -> list[str]:
    """buildah run's options for a bounding set of `keep` alone (`--cap-drop=all` would
    drop the added one too): every capability this kernel knows, but that one, dropped."""
    names = subprocess.run(
        ["setpriv", "--list-caps"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [f"--cap-add=CAP_{keep.upper()}"] + [
        f"--cap-drop=CAP_{n.upper()}" for n in names if n != keep
    ]


@contextlib.contextmanager
def running(
    image: Image,
    args: list[str],
    volumes: list[str],
    log_dir: Path,
    user: Optional[str] = None,
    capability: Optional[str] = None,
) -> Iterator[RunningExporter]:
    """The image's entrypoint with `args` in a container of its own (buildah run, chroot
    isolation: the host's PID and network namespaces, as with hostPID and a host port),
    as `user` (default: the image's USER), with `capability` alone when given, with
    no_new_privs (inherited from setpriv), and `volumes` (host:container:ro) mounted. The
    port it bound is read from its log, so `args` listen on port 0."""
    container = f"ksm-exporter-test-{os.getpid()}-{next(_containers)}"
    buildah("from", "--pull=never", f"--name={container}", image.name)
    try:
        options = [f"--volume={v}" for v in volumes]
        options += [f"--user={user}"] if user else []
        options += _only_capability(capability) if capability else []
        command = ["setpriv", "--no-new-privs", *BUILDAH, "run", "--isolation=chroot"]
        command += [*options, container, "--", *image.entrypoint, *args]
        with listening_process(command, log_dir, "exporter-in-image", timeout=30) as exporter:
            yield exporter
    finally:
        buildah("rm", container)


if __name__ == "__main__":
    started = time.monotonic()
    built = build_image(f"ksm-exporter:{__version__}", Path("/dev/stderr"))
    print(f"{built.name}: {built.size()}, after {time.monotonic() - started:.0f} s")
