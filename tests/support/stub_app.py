"""An app for the HTTP server on its own: echoes, large bodies, late and failing futures."""

from __future__ import annotations

import concurrent.futures
import threading

from ksm_exporter.daemon.web.app import Response


class StubApp:
    """Echoes the request; /big answers 4 MB (more than a socket buffer holds).
    /later answers with a future that the test completes (`complete_later`), /later-boom
    with one that fails; /block blocks the loop itself until `unblock` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.futures: list[tuple[str, concurrent.futures.Future[Response]]] = []
        self.unblock = threading.Event()

    def handle(
        self, method: str, path: str, headers: dict[str, str]
    ) -> Response | concurrent.futures.Future[Response]:
        self.calls.append((method, path, headers))
        if path == "/boom":
            raise RuntimeError("a bug in a route")
        if path == "/big":
            return Response(200, "application/octet-stream", b"x" * (4 << 20))
        if path.startswith("/later"):
            future: concurrent.futures.Future[Response] = concurrent.futures.Future()
            self.futures.append((path, future))
            return future
        if path == "/block":
            self.unblock.wait(30)
        return Response(200, "text/plain", f"{method} {path}\n".encode(), [("X-Test", "1")])

    def complete_later(self, i: int, body: bytes = b"later\n") -> None:
        """Complete the i-th future from another thread, as a worker pool would."""

        def done() -> None:
            path, f = self.futures[i]
            if path == "/later-boom":
                f.set_exception(ValueError("a collector failed"))
            else:
                f.set_result(Response(200, "text/plain", body))

        t = threading.Thread(target=done)
        t.start()
        t.join(5)
