"""Import the stdlib-only generator scripts (rules/generate.py, grafana/generate.py), which
live outside the package so that they run on a monitoring server without it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

from tests.support import REPO

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
HAVE_PROMTOOL = Path(PROMTOOL).is_file()
NO_PROMTOOL = "promtool not installed (Debian package prometheus)"


def load_script(relpath: str) -> ModuleType:
    name = "_script_" + relpath.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    assert spec is not None and spec.loader is not None, relpath
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
