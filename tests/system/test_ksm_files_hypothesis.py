"""Whatever the KSM files hold (bytes, text, huge or negative numbers, empty, very long),
the exporter does not crash, every file that is well-formed keeps its exact value, and
every broken one is counted in ksm_exporter_read_errors_total{file}.

Many examples go through the readers and the collector in-process (fast); a handful go
through the running exporter. Files this exporter does not know, whatever their names,
never make a family or a series twice, and promtool finds nothing to say.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ksm_exporter.collectors.exporter import ExporterCollector
from ksm_exporter.collectors.ksm import KsmCollector
from ksm_exporter.model.derived import page_size
from ksm_exporter.model.ksm_files import BY_FILE
from ksm_exporter.readers import Paths
from ksm_exporter.readers.sysfs_ksm import SIGNED_FILES
from tests.support import FIXTURES, parse_samples, run_exporter
from tests.support.collect import Scrapes, ksm_scrapes, new_read_errors
from tests.support.scripts import HAVE_PROMTOOL, PROMTOOL

KSM_FILES = sorted(p.name for p in (FIXTURES / "linux-6.18/sys/kernel/mm/ksm").iterdir())
U64, S64 = 2**64 - 1, 2**63 - 1


def well_formed(name: str) -> st.SearchStrategy[tuple[bytes, object]]:
    """Contents a kernel could write, with the value they must be exported as."""
    if name == "advisor_mode":
        return st.sampled_from(
            [(b"[none] scan-time\n", "none"), (b"none [scan-time]\n", "scan-time")]
        )
    low, high = (-S64 - 1, S64) if name in SIGNED_FILES else (0, U64)
    return st.integers(low, high).map(lambda n: (f"{n}\n".encode(), n))


def broken() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.text(max_size=40).map(str.encode),
        st.integers(U64 + 1, 2**90).map(lambda n: str(n).encode()),
        st.integers(-(2**90), -(2**63) - 1).map(lambda n: str(n).encode()),
        st.just(b""),
        st.integers(4097, 9000).map(lambda n: b"1" * n),
        st.sampled_from(
            [b"12abc\n", b"1.5\n", b"0x10\n", b"+5\n", b"1_000\n", b"[none] [scan-time]\n"]
        ),
    )


@st.composite
def ksm_contents(draw: st.DrawFn) -> dict[str, tuple[bytes, object]]:
    """file -> (bytes, the exact value or None when the content is not well-formed)."""
    out: dict[str, tuple[bytes, object]] = {}
    for name in KSM_FILES:
        if draw(st.booleans()):
            out[name] = draw(well_formed(name))
        else:
            out[name] = (draw(broken()), None)
    return out


def expected_value(name: str, data: bytes, value: object) -> object:
    """What the exporter must do with `data`: the exact value, or None for "an error".
    Broken contents that happen to be well-formed (the text "7") count as values."""
    if value is not None:
        return value
    text = data.decode("ascii", "replace").strip()
    if name == "advisor_mode":
        return None if text.count("[") != 1 else "?"  # unusual but readable: not checked
    if len(data) > 4096 or not data.isascii() or not text.lstrip("-").isdigit():
        return None
    n = int(text)
    low, high = (-S64 - 1, S64) if name in SIGNED_FILES else (0, U64)
    return n if low <= n <= high else None


def write_tree(ksm_dir: Path, contents: dict[str, tuple[bytes, object]]) -> None:
    for name, (data, _) in contents.items():
        tmp = ksm_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, ksm_dir / name)


def check(samples: dict[str, float], before: dict[str, float], contents: dict) -> None:  # type: ignore[type-arg]
    for name, (data, value) in contents.items():
        want = expected_value(name, data, value)
        errors_key = f'ksm_exporter_read_errors_total{{file="{name}"}}'
        if want is None:
            assert samples.get(errors_key, 0) > before.get(errors_key, 0), (name, data[:60])
        elif name == "advisor_mode":
            if want != "?":
                assert samples[f'ksm_advisor_mode{{mode="{want}"}}'] == 1
        else:
            m = BY_FILE[name]
            exact = want / m.divisor if m.divisor != 1 else want  # type: ignore[operator]
            assert samples[m.name] == float(exact), (name, data[:60])
            assert samples.get(errors_key, 0) == before.get(errors_key, 0), name
    assert samples["ksm_up"] == 1


@pytest.fixture(scope="module")
def tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "t"
        shutil.copytree(FIXTURES / "linux-6.18", root)
        yield root


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=ksm_contents())
def test_collector_keeps_good_values_and_counts_broken_files(tree: Path, contents: dict) -> None:  # type: ignore[type-arg]
    paths = Paths(tree / "sys", tree / "proc")
    errors = new_read_errors()
    ksm = KsmCollector(paths.ksm_dir, page_size(), errors)
    scrapes = Scrapes(
        paths.procfs, {"ksm": ksm, "exporter": ExporterCollector(errors, None)}, errors
    )
    write_tree(tree / "sys/kernel/mm/ksm", contents)
    before = scrapes.scrape()  # counts from one read
    samples = scrapes.scrape()
    check(samples, before, contents)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    tmp = tmp_path_factory.mktemp("hyp")
    root = tmp / "t"
    shutil.copytree(FIXTURES / "linux-6.18", root)
    with run_exporter(root, tmp=tmp, interval="1s") as exp:
        yield root, exp


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=ksm_contents())
def test_running_exporter_keeps_good_values(running: tuple[Path, object], contents: dict) -> None:  # type: ignore[type-arg]
    root, exp = running
    before = exp.metrics()  # type: ignore[attr-defined]
    write_tree(root / "sys/kernel/mm/ksm", contents)
    check(exp.metrics(), before, contents)  # type: ignore[attr-defined]
    assert exp.proc.poll() is None  # type: ignore[attr-defined]


# --- files this exporter does not know, under any name -------------------------------------

# Names of the exporter's own families (and a counter's _total), and names equal once
# sanitised: as metric names they would clash; as label values they cannot.
CLASHING_NAMES = [
    "memory_total_bytes",
    "settled",
    "run_transitions_total",
    "exporter_build_info",
    "ksm_up",
    "foo-bar",
    "foo_bar",
    "foo.bar",
    'a"quote\\back',
    "new\nline",
    "caf\u00e9",
]


def scrape_ksm(root: Path) -> str:
    return ksm_scrapes(root).text()


def promtool_problems(body: str) -> str:
    if not HAVE_PROMTOOL:
        return ""
    r = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    return "" if r.returncode == 0 and not (r.stdout + r.stderr).strip() else r.stdout + r.stderr


def unknown_values(body: str) -> dict[str, float]:
    """file -> value of ksm_unknown_file_value, parsed as Prometheus would; fails on a
    family or a series given twice."""
    families = [f.name for f in text_string_to_metric_families(body)]
    assert len(families) == len(set(families)), families
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "ksm_unknown_file_value":
            for sample in family.samples:
                assert sample.labels["file"] not in out, sample
                out[sample.labels["file"]] = sample.value
    return out


def test_unknown_files_never_clash_with_the_exporters_metrics_or_each_other(
    tmp_path: Path,
) -> None:
    root = tmp_path / "t"
    shutil.copytree(FIXTURES / "linux-6.18", root)
    ksm_dir = root / "sys/kernel/mm/ksm"
    for n, name in enumerate(CLASHING_NAMES, 1):
        (ksm_dir / name).write_text(f"{n}\n")
    os.close(os.open(os.fsencode(ksm_dir) + b"/bad\xffname", os.O_CREAT | os.O_WRONLY))
    body = scrape_ksm(root)
    assert unknown_values(body) == {name: n for n, name in enumerate(CLASHING_NAMES, 1)}
    assert promtool_problems(body) == ""
    # The name that is not UTF-8 is a read error under one fixed label, not a broken scrape.
    assert parse_samples(body)['ksm_exporter_read_errors_total{file="(name not UTF-8)"}'] == 1


file_names = st.text(
    st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.dictionaries(
        file_names,
        st.integers(0, U64).map(lambda n: f"{n}\n".encode()) | broken(),
        max_size=6,
    )
)
def test_any_unknown_files_keep_the_exposition_valid(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "t"
        shutil.copytree(FIXTURES / "linux-6.18", root)
        for name, data in files.items():
            (root / "sys/kernel/mm/ksm" / name).write_bytes(data)
        body = scrape_ksm(root)
    got = unknown_values(body)
    for name, data in files.items():
        if name in KSM_FILES:
            continue  # a known file with other contents: the first test's subject
        text = data.decode("ascii", "replace").strip()
        well_formed = len(data) <= 4096 and text.isascii() and text.isdigit() and int(text) <= U64
        assert got.get(name) == (float(int(text)) if well_formed else None), (name, data[:40])
    assert promtool_problems(body) == ""
