"""A real loopback HTTP server whose every answer a test writes on the socket itself:
garbage, half answers, endless or dripping bodies, or nothing at all."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# writes the answer to one request on the connection: (connection, request line, body)
Answer = Callable[[socket.socket, str, bytes], None]


class HostileServer:
    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self._answer = answer
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        # closing a listening socket does not wake a thread blocked in accept()
        self._sock.settimeout(0.1)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}"
        self.requests: list[str] = []
        self.open_connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.open_connections += 1
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):  # a client that does not trust the certificate
            conn.close()
            with self._lock:
                self.open_connections -= 1
            return
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                line = reader.readline()
                if not line:
                    return
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = reader.read(length) if length else b""
                request = line.decode().strip()
                with self._lock:
                    self.requests.append(request)
                self._answer(conn, request, body)
        except OSError:
            pass
        finally:
            reader.close()
            conn.close()
            with self._lock:
                self.open_connections -= 1


@contextmanager
def hostile_server(answer: Answer, tls: ssl.SSLContext | None = None) -> Iterator[HostileServer]:
    server = HostileServer(answer, tls)
    try:
        yield server
    finally:
        server.close()


def head(status: str, content_type: str = "application/json", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(status: str, body: bytes, content_type: str = "application/json") -> Answer:
    """An answer with a complete body."""

    def answer(conn: socket.socket, request: str, _body: bytes) -> None:
        conn.sendall(head(status, content_type, Content_Length=str(len(body))) + body)

    return answer
