"""A webhook receiver for tests: an HTTP server on loopback that records every delivery and
answers as the test scripts it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """An HTTP server on loopback that records every POST and answers what ``script`` says
    for it (a status, ``"slow"``: nothing for 7 s, or ``"redirect"``); 200 once the script
    runs out."""

    script: list[int | str] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    #: Every delivery waits this long before it is answered (a slow receiver).
    delay: float = 0.0
    #: The most deliveries in progress at once.
    most_at_once: int = 0
    _now: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self, port: int = 0) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver._now += 1
                    receiver.most_at_once = max(receiver.most_at_once, receiver._now)
                    receiver.received.append((dict(self.headers.items()), body))
                    answer = receiver.script.pop(0) if receiver.script else 200
                try:
                    if receiver.delay:
                        time.sleep(receiver.delay)
                    self._answer(answer)
                finally:
                    with receiver._lock:
                        receiver._now -= 1

            def _answer(self, answer: int | str) -> None:
                if answer == "slow":  # nothing within the deliverer's 5 s
                    time.sleep(7)
                    answer = 200
                if answer == "redirect":
                    self.send_response(307)
                    self.send_header("Location", "/elsewhere")
                else:
                    self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, body in self.received]


@contextlib.contextmanager
def running_receiver(delay: float = 0.0) -> Iterator[Receiver]:
    """A receiver listening on a free loopback port, stopped afterwards."""
    receiver = Receiver(delay=delay)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
