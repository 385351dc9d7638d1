"""/transitions as one cached serialisation, made off the HTTP loop when the history
changes.

With --transitions.max-history 20000 the answer is ~8 MB and took ~0.5 s of CPU to build;
built per request on the loop, 20 clients held every scrape for seconds. Here each entry is
encoded once (an entry never changes), the document is the join of the cached entries, and
a history not seen yet is rendered on a short-lived thread: the loop sends bytes that
exist, or parks the request on the render's future. Concurrent requests for the same
history share one render. The answer is at most MAX_BYTES (the newest entries that fit).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Optional, TypeVar, Union

from ksm_exporter.daemon.threads import set_native_thread_name
from ksm_exporter.state.transitions import Transition

# ~40,000 entries of ~420 bytes: more than any sane --transitions.max-history, and still
# a bounded answer (and copy in memory) if the flag is set higher.
MAX_BYTES = 16 << 20

History = tuple[Transition, ...]
T = TypeVar("T")
U = TypeVar("U")


def _same(a: History, b: History) -> bool:
    """The same history: it only grows at its end and drops at its start, and each entry
    is a new object, so its length and the identity of both ends tell."""
    return len(a) == len(b) and (not a or (a[0] is b[0] and a[-1] is b[-1]))


def _encode(t: Transition) -> bytes:
    # As json.dumps(history, indent=1) lays out one element of the array.
    return b" " + json.dumps(t.to_json(), indent=1).replace("\n", "\n ").encode()


# Encoded entries by id(), each with its entry: held, so that its id is not reused.
Encoded = dict[int, tuple[Transition, bytes]]


def render(history: History, previous: Encoded) -> tuple[bytes, Encoded]:
    """The document (the bytes json.dumps(history, indent=1) gives, cut to MAX_BYTES from
    the oldest end) and its entries' encodings, to reuse next time."""
    parts: list[bytes] = []
    size = 4
    for t in reversed(history):  # newest first: they are the ones kept at the cap
        known = previous.get(id(t))
        part = known[1] if known is not None and known[0] is t else _encode(t)
        size += len(part) + 2
        if size > MAX_BYTES:
            break
        parts.append(part)
    parts.reverse()
    kept = history[len(history) - len(parts) :]
    body = b"[\n" + b",\n".join(parts) + b"\n]" if parts else b"[]"
    return body, {id(t): (t, p) for t, p in zip(kept, parts)}


class TransitionsDocument:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: History = ()  # the last one rendered, and its document
        self._body = b"[]"
        self._parts: Encoded = {}
        self._pending: Optional[tuple[History, Future[bytes]]] = None

    def get(self, history: History) -> Union[bytes, Future[bytes]]:
        """The document for `history`: at once if rendered already, else a future that a
        render thread completes."""
        with self._lock:
            if _same(history, self._history):
                return self._body
            if self._pending is not None and _same(history, self._pending[0]):
                return self._pending[1]
            future: Future[bytes] = Future()
            self._pending = (history, future)
            previous = self._parts
        threading.Thread(
            target=self._render,
            args=(history, previous, future),
            name="ksm-transitions",
            daemon=True,
        ).start()
        return future

    def _render(self, history: History, previous: Encoded, future: Future[bytes]) -> None:
        set_native_thread_name("ksm-transitions")
        try:
            body, parts = render(history, previous)
        except Exception as e:  # a bug: the request gets a 500, the next one tries again
            with self._lock:
                if self._pending is not None and self._pending[1] is future:
                    self._pending = None
            future.set_exception(e)
            return
        with self._lock:
            self._history, self._body, self._parts = history, body, parts
            if self._pending is not None and self._pending[1] is future:
                self._pending = None
        future.set_result(body)


def mapped(value: Union[T, Future[T]], fn: Callable[[T], U]) -> Union[U, Future[U]]:
    """fn(value) now, or a future of it when `value` is a future."""
    if not isinstance(value, Future):
        return fn(value)
    out: Future[U] = Future()

    def done(f: Future[T]) -> None:
        try:
            out.set_result(fn(f.result()))
        except Exception as e:
            out.set_exception(e)

    value.add_done_callback(done)
    return out
