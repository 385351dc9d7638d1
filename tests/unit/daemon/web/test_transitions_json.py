"""/transitions' cached serialisation: the same bytes as before, each entry encoded once,
rendered off the caller's thread, bounded."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future

import pytest

from ksm_exporter.daemon.web import transitions_json
from ksm_exporter.daemon.web.transitions_json import TransitionsDocument, mapped
from ksm_exporter.model.derived import RunState
from ksm_exporter.model.edge_cause import Cause
from ksm_exporter.state.transitions import Transition


def edge(i: int, controller: str | None = None) -> Transition:
    return Transition(
        timestamp=1_700_000_000.0 + i,
        from_state=RunState.STOPPED if i % 2 else None,
        to_state=RunState.RUNNING if i % 2 else RunState.STOPPED,
        run=i % 2,
        mem_total_bytes=64 << 30,
        mem_used_bytes=(i * 4096) or None,
        mem_free_bytes=32 << 30,
        mem_available_bytes=None,
        ksmtuned_threshold_bytes=8 << 30 if i % 3 else None,
        cause=Cause.KSMTUNED if controller else Cause.UNKNOWN,
        controller=controller,
    )


def document(doc: TransitionsDocument, history: tuple[Transition, ...]) -> bytes:
    body = doc.get(history)
    return body.result(10) if isinstance(body, Future) else body


@pytest.mark.parametrize("n", [0, 1, 5])
def test_the_same_bytes_as_json_dumps_with_indent_1(n: int) -> None:
    history = tuple(edge(i, "ksmtuned \u00e9\u202e" if i == 2 else None) for i in range(n))
    expected = json.dumps([t.to_json() for t in history], indent=1).encode()
    assert document(TransitionsDocument(), history) == expected


def test_rendered_once_per_history_and_each_entry_encoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[float] = []
    encode = transitions_json._encode
    monkeypatch.setattr(
        transitions_json, "_encode", lambda t: encoded.append(t.timestamp) or encode(t)
    )
    doc = TransitionsDocument()
    history = tuple(edge(i) for i in range(100))
    first = doc.get(history)
    assert isinstance(first, Future)  # a new history: rendered on another thread
    body = first.result(10)
    assert doc.get(tuple(history)) is body  # a copy of the same history: the cached bytes
    assert len(encoded) == 100
    # One more edge, the oldest dropped (a full history): only the new one is encoded.
    grown = (*history[1:], edge(100))
    assert json.loads(document(doc, grown)) == [t.to_json() for t in grown]
    assert encoded[100:] == [grown[-1].timestamp]


def test_concurrent_requests_share_one_render(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    encode = transitions_json._encode
    monkeypatch.setattr(transitions_json, "_encode", lambda t: gate.wait(10) and encode(t))
    doc = TransitionsDocument()
    history = (edge(0), edge(1))
    first, second = doc.get(history), doc.get(history)
    assert isinstance(first, Future) and first is second
    gate.set()
    assert json.loads(first.result(10))[1]["timestamp"] == history[1].timestamp


def test_the_answer_is_bounded_keeping_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    history = tuple(edge(i) for i in range(50))
    one = len(transitions_json._encode(history[0])) + 2
    monkeypatch.setattr(transitions_json, "MAX_BYTES", 10 * one + 4)
    body = document(TransitionsDocument(), history)
    assert len(body) <= transitions_json.MAX_BYTES
    kept = json.loads(body)
    assert 5 <= len(kept) < 50  # entries differ in size: about 10 fit
    assert kept == [t.to_json() for t in history[-len(kept) :]]


def test_a_failed_render_is_an_error_and_the_next_request_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encode = transitions_json._encode
    monkeypatch.setattr(transitions_json, "_encode", lambda t: 1 / 0)
    doc = TransitionsDocument()
    history = (edge(0),)
    with pytest.raises(ZeroDivisionError):
        document(doc, history)
    monkeypatch.setattr(transitions_json, "_encode", encode)
    assert json.loads(document(doc, history))[0]["run"] == 0


def test_mapped_applies_now_or_when_the_future_completes() -> None:
    assert mapped(2, lambda x: x * 10) == 20
    f: Future[int] = Future()
    out = mapped(f, lambda x: x * 10)
    assert isinstance(out, Future) and not out.done()
    f.set_result(3)
    assert out.result(1) == 30
    failed: Future[int] = Future()
    out = mapped(failed, lambda x: x)
    failed.set_exception(ValueError("no"))
    with pytest.raises(ValueError):
        out.result(1)
