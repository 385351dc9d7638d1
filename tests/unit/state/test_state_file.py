from __future__ import annotations

import errno
import json
import logging
import os
import signal
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksm_exporter.model.derived import RunState, run_state
from ksm_exporter.state import state_file
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import BadEntry, Transition, TransitionTracker
from tests.support import copy_fixture, run_exporter, wait_until, write_ksm


def _history(n: int) -> TransitionTracker:
    tracker = TransitionTracker(max_history=100)
    for i in range(n + 1):
        tracker.observe(i % 2, None, float(i))
    return tracker


def test_round_trip(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    history = _history(5).state().history
    assert sf.save(history)
    assert sf.load() == list(history)
    assert sf.errors == 0


def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    sf.save(_history(3).state().history)
    with open(sf.path, "a") as f:
        f.write('{"timestamp": 9, "to": "runn\n')
        f.write("not json\n")
        f.write('"a JSON string"\n')
    loaded = sf.load()
    assert [t.to_state for t in loaded] == [RunState.RUNNING, RunState.STOPPED, RunState.RUNNING]
    assert sf.errors == 3


def test_unwritable_location_keeps_going_and_counts(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "missing-dir" / "state")
    assert not sf.save(_history(2).state().history)
    assert sf.errors == 1


def test_history_survives_sigterm_and_restart_of_the_exporter(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    state = tmp_path / "state.jsonl"
    with run_exporter(root, f"--state.file={state}", tmp=tmp_path) as exporter:
        for i, run in enumerate((1, 0, 1, 2, 0)):
            write_ksm(root, "run", run)
            # The watcher's own record of the edge, not the scrape's reading (a loaded
            # machine can delay the watcher past any fixed sleep).
            wait_until(
                lambda n=i + 1: len(json.loads(exporter.get("/transitions")[1])) == n,
                what=f"transition {i + 1} (run={run}) recorded",
            )
        _, body = exporter.get("/transitions")
        before = json.loads(body)
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(5) == 0
    assert [t["to"] for t in before] == ["running", "stopped", "running", "unmerging", "stopped"]
    # The fixture's /proc has no pid 1 (as if hidden): no telling who started or stopped
    # KSM; ksmtuned never unmerges. The causes come back from the file below.
    assert [t["cause"] for t in before] == ["unknown", "unknown", "unknown", "other", "unknown"]
    with run_exporter(root, f"--state.file={state}", tmp=tmp_path) as exporter:
        _, body = exporter.get("/transitions")
        assert json.loads(body) == before
        m = exporter.metrics()
        # The latest edge into each state is restored; counters restart at zero.
        assert (
            m['ksm_last_transition_timestamp_seconds{state="stopped"}'] == before[-1]["timestamp"]
        )
        assert m['ksm_run_transitions_total{cause="unknown",state="running"}'] == 0


# --- a hostile state file ----------------------------------------------------------------

GOOD = [
    '{"from": null, "run": 1, "timestamp": 10.5, "to": "running", "mem_used_bytes": 5, "c": "x"}',
    '{"from": "running", "run": 0, "timestamp": 20, "to": "stopped", "ksmtuned_free_bytes": 1}',
    '{"from": "stopped", "run": 6, "timestamp": 30, "to": "unmerging", "cause": "x"}',
]

BAD = [
    "12345",
    "null",
    "[1,2]",
    '"a string"',
    "not json",
    "[" * 2000 + "]" * 2000,  # nested past the recursion limit
    '{"run": 1, "timestamp": 1e20, "to": "running"}',  # in the year 3e12
    '{"run": 1, "timestamp": 1' + "0" * 309 + ', "to": "running"}',  # past float's range
    '{"run": 1, "timestamp": NaN, "to": "running"}',
    '{"run": 1, "timestamp": Infinity, "to": "running"}',
    '{"run": 1, "timestamp": -1, "to": "running"}',
    '{"run": 1, "timestamp": true, "to": "running"}',
    '{"run": 1, "timestamp": "10", "to": "running"}',
    '{"run": 1, "timestamp": 1, "to": "running", "mem_used_bytes": 1' + "0" * 400 + "}",
    '{"run": 1, "timestamp": 1, "to": "running", "mem_free_bytes": 18446744073709551616}',
    '{"run": 1, "timestamp": 1, "to": "running", "mem_free_bytes": -1}',
    '{"run": 1, "timestamp": 1, "to": "running", "mem_free_bytes": 1.5}',
    '{"run": 1, "timestamp": 1, "to": "running", "ksmtuned_free_bytes": 1e400}',
    '{"run": 1, "timestamp": 1, "to": "sleeping"}',
    '{"run": 1, "timestamp": 1, "to": "stopped"}',  # run 1 is running
    '{"run": 1, "timestamp": 1, "to": "running", "from": ["x"]}',
    '{"run": true, "timestamp": 1, "to": "running"}',
    '{"run": 18446744073709551617, "timestamp": 1, "to": "running"}',
    '{"timestamp": 1, "to": "running"}',
    '{"run": 1, "timestamp": 1, "to": "running", "x": "' + "a" * 5000 + '"}',  # too long
]


def test_lines_that_are_not_entries_are_dropped_the_valid_ones_kept_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sf = StateFile(tmp_path / "state")
    lines = [BAD[0], GOOD[0], *BAD[1:12], GOOD[1], *BAD[12:], GOOD[2]]
    data = "\n".join(lines).encode() + b"\n" + GOOD[0].replace('"x"', '"\xff"').encode("latin-1")
    sf.path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        loaded = sf.load()
    assert [(t.timestamp, t.to_state, t.mem_used_bytes) for t in loaded] == [
        (10.5, RunState.RUNNING, 5),
        (20.0, RunState.STOPPED, None),
        (30.0, RunState.UNMERGING, None),
    ]
    assert sf.errors == len(BAD) + 1
    # One line says it all, whatever the number of bad lines.
    [record] = caplog.records
    assert f"{len(BAD) + 1} lines dropped" in record.getMessage()
    assert "too short: 6" in record.getMessage()  # 12345, null, [1,2], ...
    assert "not JSON: 1" in record.getMessage()  # nested too deep
    assert "not UTF-8: 1" in record.getMessage()
    assert "removed at the next save" in record.getMessage()
    # The file is untouched until a save, which writes the valid entries only.
    assert sf.path.read_bytes() == data
    assert sf.save(loaded)
    again = StateFile(sf.path)
    assert again.load() == loaded and again.errors == 0


def test_a_time_a_day_ahead_is_not_an_entry() -> None:
    entry = {"run": 1, "timestamp": 1000.0, "to": "running"}
    assert Transition.from_json(entry, now=1000.0 - 86000).timestamp == 1000.0
    with pytest.raises(BadEntry, match="timestamp"):
        Transition.from_json(entry, now=1000.0 - 87000)


def test_garbage_only_starts_with_an_empty_history(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    sf.path.write_bytes(bytes(range(256)) * 40)
    assert sf.load() == []
    assert sf.errors > 0


def test_a_huge_file_is_read_from_its_end_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sf = StateFile(tmp_path / "state")
    with open(sf.path, "wb") as f:
        f.write(b"{}\n" * 1000)
        f.truncate(100 * 2**20)  # 100 MB, sparse: a line of NUL bytes
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + "\n".join(GOOD).encode() + b"\n")
    with caplog.at_level(logging.WARNING):
        loaded = sf.load()
    assert [t.timestamp for t in loaded] == [10.5, 20.0, 30.0]
    [record] = caplog.records
    assert "before the last 8 MiB, not read: 1" in record.getMessage()


def test_the_save_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    sf = StateFile(tmp_path / "state")
    for name in ("state.tmp", ".state.tmp"):  # the old fixed temporary name, and ours
        (tmp_path / name).symlink_to(victim)
    assert sf.save(_history(2).state().history)
    assert victim.read_text() == "precious\n"
    assert len(sf.load()) == 2
    # A symlink at the state file itself is replaced, not written through.
    sf.path.unlink()
    sf.path.symlink_to(victim)
    assert sf.save(_history(2).state().history)
    assert victim.read_text() == "precious\n" and not sf.path.is_symlink()


def test_temporaries_of_interrupted_saves_are_removed(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    sf.save(_history(2).state().history)
    (tmp_path / ".state.abc123_z.tmp").write_text("half a save")
    (tmp_path / ".state.backup.old.tmp").write_text("not ours either")
    (tmp_path / "other.tmp").write_text("not ours")
    assert len(sf.load()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".state.backup.old.tmp",
        "other.tmp",
        "state",
    ]


@pytest.mark.parametrize("kind", ["fifo", "directory", "unreadable"])
def test_a_file_that_cannot_be_read_is_never_overwritten(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "state"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:  # EIO, EACCES for a non-root exporter: a read that fails
        path.write_text(GOOD[0] + "\n")
    sf = StateFile(path)
    if kind == "unreadable":
        sf._read = lambda: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))  # type: ignore[method-assign]
    assert sf.load() == []  # returns at once: a FIFO without a writer does not block
    assert sf.errors == 1
    assert not sf.save(_history(2).state().history)
    assert sf.errors == 2
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(path).st_mode)
    elif kind == "unreadable":
        assert path.read_text() == GOOD[0] + "\n"


def test_the_exporter_starts_whatever_the_file_holds(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    state = tmp_path / "state.jsonl"
    # BAD[7]: a timestamp of 310 digits, which float() cannot convert.
    junk = b"12345\nnull\n\xff\n" + GOOD[0].encode() + b"\n[1,2]\n" + BAD[6].encode()
    state.write_bytes(junk + b"\n" + BAD[7].encode())
    with run_exporter(root, f"--state.file={state}", tmp=tmp_path) as exporter:
        status, body = exporter.get("/transitions")
        assert status == 200
        assert [t["timestamp"] for t in json.loads(body)] == [10.5]
        assert exporter.get("/")[0] == 200
        assert exporter.metrics()["ksm_exporter_state_file_errors_total"] == 6
        assert exporter.log().count("lines dropped") == 1


# Lines a state file may hold: entries, entries with unknown keys, and anything else.
entry_lines = st.builds(
    lambda run, ts, mem, extra: json.dumps(
        {"run": run, "timestamp": ts, "to": run_state(run).value, "mem_used_bytes": mem, **extra}
    ).encode(),
    st.integers(0, 7),
    st.floats(0, 2e9, allow_nan=False),
    st.none() | st.integers(0, 2**60),
    st.dictionaries(st.sampled_from(["cause", "controller", "x"]), st.text(max_size=5)),
)
junk_lines = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")) | st.sampled_from(
    [b"null", b"12345", b"[1,2]", b"{}", b'{"run": 1}', *(b.encode() for b in BAD[6:14])]
)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.tuples(st.booleans(), entry_lines | junk_lines), max_size=20))
def test_any_bytes_load_and_every_valid_entry_survives_a_save(
    lines: list[tuple[bool, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as d:
        sf = StateFile(Path(d) / "state")
        sf.path.write_bytes(b"\n".join(line for _, line in lines))
        loaded = sf.load()  # never raises
        want = []
        for _, line in lines:
            try:
                want.append(Transition.from_json(json.loads(line)))
            except ValueError:
                continue
        assert loaded == want
        assert sf.save(loaded)
        again = StateFile(sf.path)
        assert again.load() == loaded and again.errors == 0


def test_a_save_that_cannot_format_an_entry_is_counted_not_raised(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    history = _history(2).state().history
    assert sf.save(history)
    bad = Transition(1e20, None, RunState.RUNNING, 1, None, None, None, None)  # year 3e12
    assert not sf.save((*history, bad))
    assert sf.errors == 1
    assert sf.load() == list(history)  # the file on disk is the previous history


@pytest.mark.parametrize("shift", [-1, 0, 1])
def test_an_entry_right_at_the_read_window_is_kept_whole_or_not_at_all(
    tmp_path: Path, shift: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 4096  # the same arithmetic as at 8 MiB, without 16 MiB of blank lines to parse
    monkeypatch.setattr(state_file, "READ_LIMIT_BYTES", window)
    sf = StateFile(tmp_path / "state")
    tail = "\n".join(GOOD).encode() + b"\n"
    # A file of twice the window, GOOD[0] starting `shift` bytes after the window's start.
    start = window + shift
    blank = b"\n" * (2 * window - start - len(tail))
    sf.path.write_bytes(b"x" * (start - 1) + b"\n" + tail + blank)
    loaded = [t.timestamp for t in sf.load()]
    assert loaded == ([20.0, 30.0] if shift < 0 else [10.5, 20.0, 30.0])
