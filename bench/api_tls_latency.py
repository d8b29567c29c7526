"""How long a simple API call takes over HTTPS on the API port (``--tls-cert``).

A server process (``python -m jobfleet server`` on uvloop, as deployed) is started from
the jobfleet sources at ``--src`` (e.g. another checkout's ``src``, to compare two
versions) with an ECDSA P-256 certificate from a CA of its own; this process is the client, one
call at a time, on blocking sockets (no client loop in the figures). Modes:

- ``keepalive``: every call on one kept-alive connection;
- ``new``: a new TCP connection and full TLS handshake per call, closed after it;
- ``resumed``: a new connection per call that resumes the previous one's TLS session
  (a TLS 1.3 ticket, as browsers and the SDK reconnect).

Each mode runs ``--calls`` calls of ``GET /healthz`` and of the bk-job read
``get_account_list`` (authenticated), after 200 warm-up calls; it reports the median,
p95 and p99 of a call's time and the server's CPU time per call (``/proc/PID/stat``).

    .venv/bin/python bench/api_tls_latency.py [--src PATH] [--calls 2000] [--label L]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobfleet.gateway.tls import ensure_agent_tls

HERE = Path(__file__).resolve().parent
WARMUP = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """One HTTP/1.1 connection over TLS, blocking: a request, then its whole answer."""

    def __init__(
        self, port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
        self.buffer = b""

    def get(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return rest[:length]

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def close(self) -> None:
        self.sock.close()


def run_mode(
    mode: str, port: int, context: ssl.SSLContext, request: bytes, calls: int
) -> list[float]:
    took: list[float] = []
    kept: Client | None = None
    session: ssl.SSLSession | None = None
    for _ in range(calls):
        start = time.perf_counter()
        if mode == "keepalive":
            if kept is None:
                kept = Client(port, context)
            kept.get(request)
        else:
            client = Client(port, context, session if mode == "resumed" else None)
            client.get(request)
            if mode == "resumed":
                # the ticket came with the first answer; a resumed session has none new
                session = client.sock.session
            client.close()
        took.append(time.perf_counter() - start)
    if kept is not None:
        kept.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=HERE.parent / "src")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--label", default="")
    parser.add_argument("--modes", default="keepalive,new,resumed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobfleet-api-tls-"))
    # a certificate for 127.0.0.1 from a CA of its own, made as the agent port's is
    tls = ensure_agent_tls(work, ["127.0.0.1"])
    cert, key = tls.cert_file, tls.key_file
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    argv = [
        sys.executable, "-m", "jobfleet", "server", "--data-dir", str(work / "server"),
        "--host", "127.0.0.1", "--port", str(port), "--agent-port", "0",
        "--tls-cert", str(cert), "--tls-key", str(key), "--log-level", "warning",
    ]  # fmt: skip
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cadata=tls.ca_pem)
    healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                Client(port, context).get(healthz)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no server; see {work}/server.log") from None
                time.sleep(0.1)
        boot = json.loads((work / "server" / "bootstrap.json").read_text())
        auth = json.dumps(
            {
                "bk_app_code": boot["bk_app_code"],
                "bk_app_secret": boot["bk_app_secret"],
                "bk_username": boot["admin_user"],
            }
        )
        read = (
            b"GET /api/bk-job/prod/api/v3/get_account_list?bk_scope_type=biz&bk_scope_id=2"
            b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bkapi-Authorization: "
            + auth.encode()
            + b"\r\n\r\n"
        )
        answer = json.loads(Client(port, context).get(read))
        assert answer["code"] == 0, answer
        for name, request in (("healthz", healthz), ("get_account_list", read)):
            for mode in args.modes.split(","):
                run_mode(mode, port, context, request, WARMUP)
                cpu = cpu_seconds(server.pid)
                took = sorted(run_mode(mode, port, context, request, args.calls))
                cpu = cpu_seconds(server.pid) - cpu
                q = statistics.quantiles(took, n=100)
                print(
                    json.dumps(
                        {
                            "label": args.label,
                            "call": name,
                            "mode": mode,
                            "calls": args.calls,
                            "median_ms": round(statistics.median(took) * 1000, 3),
                            "p95_ms": round(q[94] * 1000, 3),
                            "p99_ms": round(q[98] * 1000, 3),
                            "total_s": round(sum(took), 3),
                            "server_cpu_ms_per_call": round(cpu / args.calls * 1000, 3),
                        }
                    ),
                    flush=True,
                )
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


if __name__ == "__main__":
    main()
