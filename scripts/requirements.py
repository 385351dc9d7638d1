#!/usr/bin/env python3
"""Prints requirements read from setup.cfg, one a line, for pip install -r / -c.

    scripts/requirements.py [EXTRA...]          the runtime requirements, then each extra's
    scripts/requirements.py --lower-bounds      the runtime requirements pinned to their
                                                lower bounds (==), as constraints

Standard library only: it runs on every Python the suite tests, 3.9 included, before
anything is installed."""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def lines(value: str) -> list[str]:
    """A setup.cfg list (one item a line; full-line comments are dropped by configparser)."""
    return [v.strip() for v in value.splitlines() if v.strip()]


def read(path: Path = SETUP_CFG) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    if not cfg.read(path):
        raise SystemExit(f"cannot read {path}")
    return cfg


def lower_bound(requirement: str) -> str:
    """`name>=X` -> `name==X`; a requirement without a `>=` bound is an error: the tier that
    tests the lower bounds must know every one."""
    m = re.fullmatch(r"([A-Za-z0-9._-]+)\s*>=\s*([^,;\s]+)", requirement)
    if not m:
        raise SystemExit(f"{SETUP_CFG.name}: {requirement!r} has no plain >= lower bound")
    return f"{m.group(1)}=={m.group(2)}"


def main(argv: list[str]) -> int:
    cfg = read()
    runtime = lines(cfg["options"]["install_requires"])
    if argv == ["--lower-bounds"]:
        print("\n".join(lower_bound(r) for r in runtime))
        return 0
    extras = cfg["options.extras_require"]
    unknown = [e for e in argv if e not in extras]
    if unknown:
        raise SystemExit(f"no such extra in {SETUP_CFG.name}: {' '.join(unknown)}")
    print("\n".join(runtime + [r for e in argv for r in lines(extras[e])]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
