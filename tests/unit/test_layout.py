"""The package's layers import only downward: model < readers < state < collectors <
daemon < commands; flags and cli on top. What a module may import is decided here, by
parsing every module's imports, not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "ksm_exporter"

LAYERS = ["model", "readers", "state", "collectors", "daemon", "commands", "top"]
# Reading and writing KSM for a command: the values, the readers and the state only.
LIMITED = {"experiment", "commands"}
LIMITED_TO = {"model", "readers", "state", "experiment"}
# The daemon's own command wires everything together (and re-reads its flags on SIGHUP).
WIRING = {"ksm_exporter.commands.serve"}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "__version__":
        return "model"  # a constant of the package's __init__
    if len(parts) < 2 or parts[1] in ("flags", "cli", "__main__"):
        return "top"
    return parts[1]


def rank(name: str) -> int:
    return LAYERS.index("commands" if name == "experiment" else name)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """The ksm_exporter modules a file imports (absolute or relative)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "ksm_exporter" and m != "ksm_exporter"}


def violations(root: Path = PACKAGE) -> list[str]:
    bad: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        mine = layer(module)
        for target in sorted(imports(path, root)):
            theirs = layer(target)
            if mine == theirs or module in WIRING:
                continue
            if mine in LIMITED and theirs not in LIMITED_TO:
                bad.append(f"{module} -> {target} ({mine} may use model, readers, state)")
            elif mine != "top" and rank(theirs) > rank(mine):
                bad.append(f"{module} -> {target} ({mine} is below {theirs})")
    return bad


def test_imports_only_go_down() -> None:
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    root = tmp_path / "ksm_exporter"
    for layer_dir in ("readers", "state", "commands", "experiment"):
        (root / layer_dir).mkdir(parents=True)
    (root / "readers" / "up.py").write_text("from ksm_exporter.state.monitor import KsmMonitor\n")
    (root / "state" / "rel.py").write_text("from ..daemon import watcher\n")
    (root / "commands" / "status.py").write_text("from ksm_exporter.collectors import ksm\n")
    (root / "experiment" / "flow.py").write_text("from ksm_exporter.commands.status import x\n")
    assert violations(root) == [
        "ksm_exporter.commands.status -> ksm_exporter.collectors (commands may use model, "
        "readers, state)",
        "ksm_exporter.commands.status -> ksm_exporter.collectors.ksm (commands may use model, "
        "readers, state)",
        "ksm_exporter.experiment.flow -> ksm_exporter.commands.status (experiment may use "
        "model, readers, state)",
        "ksm_exporter.experiment.flow -> ksm_exporter.commands.status.x (experiment may use "
        "model, readers, state)",
        "ksm_exporter.readers.up -> ksm_exporter.state.monitor (readers is below state)",
        "ksm_exporter.readers.up -> ksm_exporter.state.monitor.KsmMonitor (readers is below state)",
        "ksm_exporter.state.rel -> ksm_exporter.daemon (state is below daemon)",
        "ksm_exporter.state.rel -> ksm_exporter.daemon.watcher (state is below daemon)",
    ]


# Beyond the model and ksm_exporter/flags itself, what each command's flags may import:
# the options their collectors and readers declare, and the workload parser (a flag's
# value). status, watch and transitions must stay clear of prometheus_client and the daemon.
FLAGS_MAY_USE = {
    "parser": set(),
    "serve": {"ksm_exporter.collectors.registry"},  # --[no-]collector.NAME and their options
    "status": set(),
    "watch": {"ksm_exporter.readers.ksmtuned_conf"},  # --collector.ksmtuned.config
    "transitions": set(),
    "experiment": {"ksm_exporter.experiment.workload"},
}


def test_each_commands_flags_use_only_what_they_configure() -> None:
    flags = PACKAGE / "flags"
    assert {p.stem for p in flags.glob("*.py")} - {"__init__"} == set(FLAGS_MAY_USE)
    assert imports(flags / "__init__.py") == set(), "importing the package must load nothing"
    for name, allowed in FLAGS_MAY_USE.items():
        found = {m for m in imports(flags / f"{name}.py") if layer(m) not in ("model", "top")}
        used = {m for m in found if m.rpartition(".")[0] not in found}  # modules, not names
        assert used == allowed, (name, used)
