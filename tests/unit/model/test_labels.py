"""Label values from what a process says about itself: at most 128 characters, a long one
cut with a hash of the whole value (a real Prometheus with label_value_length_limit:
tests/system/test_attacks.py)."""

from __future__ import annotations

import re
from pathlib import Path

from ksm_exporter.model.labels import LABEL_MAX_CHARS, bounded_label
from tests.support.collect import collector, scrape
from tests.support.fake_procfs import KSMTUNED_PID, write_ksmtuned_node, write_ksmtuned_script


def test_a_long_label_is_cut_with_a_hash_of_the_whole_value() -> None:
    assert bounded_label("web01") == "web01"
    assert bounded_label("x" * LABEL_MAX_CHARS) == "x" * LABEL_MAX_CHARS
    a, b = bounded_label("x" * 10000 + "a"), bounded_label("x" * 10000 + "b")
    assert len(a) == len(b) == LABEL_MAX_CHARS
    assert a.startswith("x" * 119 + "\u2026") and a != b  # two long names stay two series
    assert a == bounded_label("x" * 10000 + "a")  # the same name, the same series
    # At most 512 bytes of UTF-8: under any label_value_length_limit of 1024.
    assert len(bounded_label("\U0001f600" * 1000).encode()) <= 4 * LABEL_MAX_CHARS


def test_a_ksmtuned_run_from_a_long_path_gives_a_bounded_script_label(tmp_path: Path) -> None:
    # Any user can run a copy of ksmtuned's script, named ksmtuned, from a path of 3 KB.
    proc = write_ksmtuned_node(tmp_path / "proc", total_kb=10**6, free_kb=10**5, qemu_rss_kb=[])
    path = "/tmp/" + "/".join(["d" * 200] * 15) + "/ksmtuned"
    (proc / str(KSMTUNED_PID) / "cmdline").write_bytes(b"/bin/bash\0" + path.encode() + b"\0")
    script = write_ksmtuned_script(proc, KSMTUNED_PID, "fedora")
    moved = proc / str(KSMTUNED_PID) / "root" / path.lstrip("/")
    moved.parent.mkdir(parents=True)
    script.rename(moved)
    [info] = [k for k in scrape(collector(proc)) if k.startswith("ksmtuned_committed_rule_info")]
    script_label = re.search(r'script="([^"]*)"', info)
    assert script_label is not None and len(script_label.group(1)) == LABEL_MAX_CHARS
    assert script_label.group(1).startswith("/tmp/ddd")
