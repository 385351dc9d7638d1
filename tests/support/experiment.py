"""What `experiment --json` prints, how its --plot PNG is checked, and the command run as
a process."""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

from tests.support import REPO, exporter_command

JSON_KEYS = {
    "used_mb",
    "free_mb",
    "saved_mb",
    "sharing_rate",
    "general_profit_bytes",
    "full_scans",
    "settle_seconds",
    "ksmd_cpu_seconds",
}


def check_png(path: Path) -> tuple[int, int]:
    """Signature, IHDR first with a good CRC, IEND last; returns (width, height)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    ihdr = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert crc == zlib.crc32(b"IHDR" + ihdr), "IHDR CRC mismatch"
    assert data[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", ihdr[:8])
    assert width > 0 and height > 0
    try:
        from PIL import Image
    except ImportError:
        return width, height
    with Image.open(path) as im:
        im.verify()
    return width, height


# --- workload shape -----------------------------------------------------------------


def run_command(*args: str, env: dict[str, str] | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        exporter_command("experiment", *args),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def fixture_env(tmp_path: Path) -> dict[str, str]:
    # A fixture tree needs no machine-wide lock: tests on fixtures never wait for the real one.
    return {"KSM_EXPORTER_LOCK": str(tmp_path / "lock")}
