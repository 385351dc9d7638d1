"""The watcher's KSM monitor over a fixture tree, as the daemon builds it."""

from __future__ import annotations

from pathlib import Path

from ksm_exporter.readers import Paths
from ksm_exporter.readers.edge_inputs import edge_explainer
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ReadErrors
from ksm_exporter.state.transitions import TransitionTracker


def fixture_monitor(root: Path, ksmtuned_conf: Path | None = None) -> KsmMonitor:
    """A monitor of root/sys and root/proc with a new tracker; with `ksmtuned_conf`, each
    edge's cause is explained from root/proc and that ksmtuned.conf."""
    explain = None if ksmtuned_conf is None else edge_explainer(root / "proc", ksmtuned_conf)
    return KsmMonitor(
        Paths(root / "sys", root / "proc"),
        TransitionTracker(),
        ReadErrors(Notices()),
        None,
        explain,
    )
