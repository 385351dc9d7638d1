"""The daemon under systemd: the journal.

No journald listens here, so journal entries go to a fake sender that records the fields
it is given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ksm_exporter.commands.serve import log_transition
from ksm_exporter.flags import serve_parser
from ksm_exporter.logging_setup import configure
from ksm_exporter.monitor import KsmMonitor
from ksm_exporter.readers import Paths
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.systemd_integration import (
    JournalHandler,
    journal_handler,
    stderr_is_journal,
)
from ksm_exporter.transitions import TransitionTracker

from .support import copy_fixture, write_ksm

# --- the journal ----------------------------------------------------------------------------


@dataclass
class FakeJournal:
    """Stands in for systemd.journal.send: each call is one entry."""

    entries: list[dict[str, object]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, **fields: object) -> None:
        if self.fail:
            raise FileNotFoundError(2, "No such file or directory")
        self.entries.append(fields)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure() replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_transition_is_one_journal_entry_with_its_fields(
    tmp_path: Path, root_logging: None
) -> None:
    journal = FakeJournal()
    handler = JournalHandler(journal)
    configure("info", "logfmt", handler)
    assert logging.getLogger().handlers == [handler]  # the journal alone: no second copy

    root = copy_fixture("linux-6.18", tmp_path)
    monitor = KsmMonitor(Paths(root / "sys", root / "proc"), TransitionTracker())
    monitor.add_listener(log_transition)
    monitor.poll()
    write_ksm(root, "run", 1)
    monitor.poll()

    [entry] = journal.entries
    mem = read_meminfo(root / "proc")
    ksm_fields = {k: v for k, v in entry.items() if k.startswith("KSM_")}
    assert entry["MESSAGE"] == "KSM is running. 25743 MB used. 6318 MB free."
    assert ksm_fields == {
        "KSM_RUN_FROM": "stopped",
        "KSM_RUN_TO": "running",
        "KSM_RUN": "1",
        "KSM_MEM_USED_BYTES": str(mem.used),
        "KSM_MEM_FREE_BYTES": str(mem.free),
        "KSM_MEM_AVAILABLE_BYTES": str(mem.available),
    }
    assert entry["PRIORITY"] == "6" and entry["SYSLOG_IDENTIFIER"] == "ksm-exporter"
    assert entry["LOGGER"] == "ksm_exporter" and entry["CODE_FUNC"] == "log_transition"


def test_journal_entries_map_levels_exceptions_and_unknown_values(root_logging: None) -> None:
    journal = FakeJournal()
    configure("debug", "logfmt", JournalHandler(journal))
    log = logging.getLogger("ksm_exporter.test")
    log.debug("polled", extra={"fields": {"ksm_dir": "/sys/kernel/mm/ksm", "err": None}})
    log.warning("skipping pages_shared: not an integer")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("watcher poll failed")
    debug, warning, error = journal.entries
    # `ksm_` keys keep their name; a None value is an absent field, not the text "None".
    assert debug["PRIORITY"] == "7" and debug["KSM_DIR"] == "/sys/kernel/mm/ksm"
    assert "KSM_ERR" not in debug
    assert warning["PRIORITY"] == "4"
    assert error["PRIORITY"] == "3"
    message = str(error["MESSAGE"])
    assert message.startswith("watcher poll failed\nTraceback")
    assert message.endswith("ValueError: bad value")


def test_journal_unreachable_falls_back_to_stderr(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("info", "logfmt", JournalHandler(FakeJournal(fail=True)))
    logging.getLogger("ksm_exporter").info("listening", extra={"fields": {"version": "0.1.0"}})
    err = capsys.readouterr().err
    assert "level=info source=test_systemd msg=listening version=0.1.0" in err


def test_journal_chosen_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    stream = tmp_path / "stream"
    stream.write_text("")
    other = tmp_path / "other"
    other.write_text("")
    with open(stream, "w") as f:
        st = os.fstat(f.fileno())
        same = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        elsewhere = {"JOURNAL_STREAM": f"{st.st_dev}:{os.stat(other).st_ino}"}
        assert stderr_is_journal(same, f.fileno())
        # A stderr redirected away from the journal keeps the variable, not the match.
        assert not stderr_is_journal(elsewhere, f.fileno())
        assert not stderr_is_journal({}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:x"}, f.fileno())
    assert isinstance(journal_handler(True, {}), JournalHandler)
    assert journal_handler(False, {}) is None
    assert serve_parser().parse_args(["--log.journal"]).log_journal is True
    assert serve_parser().parse_args([]).log_journal is False
