"""What one idle TLS connection costs the server's process, layer by layer.

The measured process (the "server") holds N connections from a client process on
loopback, each past its handshake and one small record each way; its RSS (VmRSS) and
glibc's count of allocated heap bytes (``mallinfo2``: in-use chunks, mapped chunks
included) are read before and after the N, once 200 warm-up connections have loaded
whatever is made once (OpenSSL's provider caches, the loop's buffers). Per connection
is the difference over N. The server's context is the agent listener's: uvicorn's
(``create_ssl_context``, cipher string "TLSv1"), an ECDSA P-256 certificate from
``gateway/tls.py``, no session tickets (``num_tickets = 0``), no client certificate;
agents connect with TLS 1.3.

Modes, each in a fresh server process:

- ``sslobject``: only ``ssl.SSLObject`` with its two ``ssl.MemoryBIO`` per connection
  (and the accepted socket), driven by blocking socket calls, no event loop;
- ``uvloop-tls``: uvloop's TLS transport (``connect_accepted_socket(ssl=...)``, as the
  agent listener's handshake gate calls it) and a minimal ``asyncio.Protocol``;
- ``asyncio-tls``: the same on the standard library's loop;
- ``uvloop-tcp``: uvloop's plain TCP transport, no TLS;
- ``uvloop-bio``: uvloop's plain TCP transport and a minimal protocol that drives an
  ``ssl.SSLObject`` over MemoryBIOs itself (uvloop reads plain sockets into one buffer
  of the loop's, shared by every connection);
- ``tlslayer``: the agent port's own, ``jobfleet.gateway.tlslayer.start_tls`` (the same
  over uvloop's plain transport, with flow control, closes and the handshake timeout).

The kernel's share is not RSS: the machine-wide ``Slab`` of ``/proc/meminfo`` and TCP's
buffer pages of ``/proc/net/sockstat`` are reported, before and after, for both ends
(noisy on a shared machine).

    .venv/bin/python bench/tls_memory.py [--count 4000] [--modes sslobject,uvloop-tls,...]
        [--repeat 1] [--pings K]
    .venv/bin/python bench/tls_memory.py --breakdown [--count 2000]
    .venv/bin/python bench/tls_memory.py --bulk 20 [--repeat 2]

``--pings K`` also times the server's CPU per record each way (K rounds over every
connection), and the handshake's. ``--breakdown``: OpenSSL's objects stage by stage in
one process, and what a MemoryBIO keeps after it carried n bytes. ``--bulk N``: what a
connection keeps after carrying 1 MiB each way, uvloop's TLS transport against the
agent port's layer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobfleet.gateway.tlslayer import start_tls

WARMUP = 200
CONCURRENCY = 32
REQUEST = b"ping"
REPLY = b"pong"
READ = 65536
MODES = ("sslobject", "uvloop-tls", "asyncio-tls", "uvloop-tcp", "uvloop-bio", "tlslayer")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use() -> int:
    """Bytes glibc has handed out and not had back (heap chunks and mapped ones)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def kernel() -> dict[str, int]:
    slab = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            slab = int(line.split()[1]) * 1024
    tcp_pages = 0
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            tcp_pages = int(fields[fields.index("mem") + 1])
    return {"slab": slab, "tcp_mem_pages": tcp_pages}


def snapshot() -> dict[str, int]:
    gc.collect()
    return {"rss": rss(), "heap": heap_in_use(), "cpu": time.process_time(), **kernel()}


# the certificate and the contexts -----------------------------------------------------------


def make_cert(directory: Path) -> tuple[Path, Path, Path]:
    from jobfleet.gateway.tls import ensure_agent_tls

    tls = ensure_agent_tls(directory, ["127.0.0.1"])
    ca = directory / "tls" / "ca.pem"
    return tls.cert_file, tls.key_file, ca


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    # the agent listener's: uvicorn builds it from the files, _AgentListener sets no tickets
    from uvicorn.config import create_ssl_context

    ctx = create_ssl_context(
        str(cert),
        str(key),
        None,
        int(ssl.PROTOCOL_TLS_SERVER),
        int(ssl.CERT_NONE),
        None,
        "TLSv1",
    )
    ctx.num_tickets = 0
    return ctx


def client_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# the client process ----------------------------------------------------------------------


async def client_main(port: int, count: int, ca: Path | None, pings: int) -> None:
    ctx = client_context(ca) if ca else None
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None
            )
            writer.write(REQUEST)
            await reader.readexactly(len(REPLY))
            held.append(writer)
            readers.append(reader)

    await asyncio.gather(*(one() for _ in range(count)))
    print(json.dumps({"held": len(held)}), flush=True)
    # rounds of one small record each way on every connection, as keepalives are
    for _ in range(pings):
        for writer in held:
            writer.write(REQUEST)
        for reader in readers:
            await reader.readexactly(len(REPLY))
    # held until the server has measured and closes its end
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# the server process: held connections ------------------------------------------------------


class Held(asyncio.Protocol):
    """One connection that answers the client's one small record, then idles."""

    done: asyncio.Queue[None]
    kept: list[Held]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(REPLY)
        self.done.put_nowait(None)


class BIOTLS(asyncio.Protocol):
    """TLS driven by the protocol over a plain transport: what uvloop's TLS transport
    does in Cython, without its 256 KiB read buffer per connection."""

    __slots__ = ("app_started", "done", "incoming", "outgoing", "sslobj", "transport")

    context: ssl.SSLContext

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.app_started = False

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.app_started:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            self.app_started = True
        while True:
            try:
                chunk = self.sslobj.read(65536)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            self.sslobj.write(REPLY)
            self.done.put_nowait(None)
        self._flush()

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.transport.write(out)


async def serve_loop(
    mode: str, count: int, ctx: ssl.SSLContext | None, report: Any, pings: int
) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Queue[None] = asyncio.Queue()
    kept: list[Any] = []
    Held.done = done

    def factory() -> asyncio.Protocol:
        if mode == "uvloop-bio":
            p: asyncio.Protocol = BIOTLS()
            p.done = done  # type: ignore[attr-defined]
        else:
            p = Held()
        kept.append(p)
        return p

    if mode == "uvloop-bio":
        assert ctx is not None
        BIOTLS.context = ctx
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    tls = ctx if mode in ("uvloop-tls", "asyncio-tls") else None

    tasks: set[asyncio.Task[Any]] = set()

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            if mode == "tlslayer":
                assert ctx is not None
                task: asyncio.Task[Any] = loop.create_task(start_tls(conn, ctx, factory, 10.0))
            else:
                task = loop.create_task(loop.connect_accepted_socket(factory, conn, ssl=tls))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    accepting = loop.create_task(accept())
    for phase, n in (("warmup", WARMUP), ("measured", count)):
        if phase == "measured":
            report(phase + "_before", snapshot())
        report("port", {"port": port, "n": n})
        for _ in range(n):
            await done.get()
        await asyncio.sleep(0.5)
        report(phase + "_after", snapshot())
    for _ in range(count * pings):
        await done.get()
    report("pings_after", snapshot())
    accepting.cancel()
    report("end", {"kept": len(kept)})


def serve_sslobject(count: int, ctx: ssl.SSLContext, report: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    kept: list[tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]] = []
    for phase, n in (("warmup", WARMUP), ("measured", count)):
        if phase == "measured":
            report(phase + "_before", snapshot())
        report("port", {"port": port, "n": n})
        for _ in range(n):
            conn, _ = listener.accept()
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(incoming, outgoing, server_side=True)
            handshaken = False
            while True:
                data = conn.recv(65536)
                if not data:
                    raise RuntimeError("client went away")
                incoming.write(data)
                if not handshaken:
                    try:
                        obj.do_handshake()
                        handshaken = True
                    except ssl.SSLWantReadError:
                        pass
                    out = outgoing.read()
                    if out:
                        conn.sendall(out)
                    if not handshaken:
                        continue
                try:
                    if obj.read(65536):
                        obj.write(REPLY)
                        conn.sendall(outgoing.read())
                        break
                except ssl.SSLWantReadError:
                    continue
            kept.append((conn, obj, incoming, outgoing))
        time.sleep(0.5)
        report(phase + "_after", snapshot())
    report("end", {"kept": len(kept)})


def server_main(mode: str, count: int, cert: Path, key: Path, pings: int) -> None:
    def report(what: str, data: dict[str, Any]) -> None:
        print(json.dumps({"what": what, **data}), flush=True)

    ctx = None if mode == "uvloop-tcp" else server_context(cert, key)
    if mode == "sslobject":
        assert ctx is not None
        serve_sslobject(count, ctx, report)
    else:
        if mode.startswith("uvloop") or mode == "tlslayer":
            import uvloop

            runner = uvloop.run
        else:
            runner = asyncio.run
        runner(serve_loop(mode, count, ctx, report, pings))
    # held until the orchestrator has read the figures
    sys.stdin.read()


# the orchestrator --------------------------------------------------------------------------


def run_mode(mode: str, count: int, cert: Path, key: Path, ca: Path, pings: int) -> dict[str, Any]:
    me = str(Path(__file__).resolve())
    if mode == "sslobject":
        pings = 0
    server = subprocess.Popen(
        [
            sys.executable,
            me,
            "--serve",
            mode,
            "--count",
            str(count),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--pings",
            str(pings),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    figures: dict[str, Any] = {}
    clients: list[subprocess.Popen[str]] = []
    try:
        for line in server.stdout:
            msg = json.loads(line)
            what = msg.pop("what")
            if what == "port":
                client = subprocess.Popen(
                    [
                        sys.executable,
                        me,
                        "--client",
                        str(msg["port"]),
                        "--count",
                        str(msg["n"]),
                        "--pings",
                        str(pings if len(clients) == 1 else 0),
                        *(["--ca", str(ca)] if mode != "uvloop-tcp" else []),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                clients.append(client)
            elif what == "end":
                break
            else:
                figures[what] = msg
    finally:
        for client in clients:
            if client.stdin:
                client.stdin.close()
            client.wait(30)
        server.stdin.close()
        server.wait(30)
    before, after = figures["measured_before"], figures["measured_after"]
    return {
        "mode": mode,
        "count": count,
        "rss_per_conn": (after["rss"] - before["rss"]) / count,
        "heap_per_conn": (after["heap"] - before["heap"]) / count,
        "slab_per_conn_pair": (after["slab"] - before["slab"]) / count,
        "tcp_mem_pages": (before["tcp_mem_pages"], after["tcp_mem_pages"]),
        "rss_before": before["rss"],
        "handshake_cpu_ms": (after["cpu"] - before["cpu"]) * 1000 / count,
        "ping_cpu_us": (
            (figures["pings_after"]["cpu"] - after["cpu"]) * 1e6 / (count * pings)
            if pings and "pings_after" in figures
            else float("nan")
        ),
    }


# in one process: OpenSSL's objects stage by stage, and what carrying a megabyte leaves -------


def breakdown(cert: Path, key: Path, ca: Path, count: int) -> None:
    """Heap per server-side object at each stage: the two MemoryBIOs, an SSL object made
    (``SSL_new``), its handshake done, a record each way. Each client side is made in
    the same process and dropped before the figure is read."""
    sctx, cctx = server_context(cert, key), client_context(ca)

    def pump(out: ssl.MemoryBIO, into: ssl.MemoryBIO) -> None:
        data = out.read()
        if data:
            into.write(data)

    def pair(stage: str) -> tuple[object, object]:
        si, so, ci, co = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        if stage == "bios":
            return (si, so), None
        server = sctx.wrap_bio(si, so, server_side=True)
        if stage == "SSL_new":
            return (server, si, so), None
        client = cctx.wrap_bio(ci, co, server_hostname="127.0.0.1")
        for _ in range(10):
            for end in (client, server):
                with contextlib.suppress(ssl.SSLWantReadError):
                    end.do_handshake()
            pump(co, si)
            pump(so, ci)
        if stage == "record":
            client.write(REQUEST)
            pump(co, si)
            server.read(READ)
            server.write(REPLY)
            pump(so, ci)
            client.read(READ)
        return (server, si, so), (client, ci, co)

    for stage in ("bios", "SSL_new", "handshake", "record"):
        for _ in range(WARMUP):
            pair(stage)
        gc.collect()
        before = heap_in_use()
        kept = [pair(stage)[0] for _ in range(count)]
        gc.collect()
        print(
            f"breakdown {stage:10} heap {(heap_in_use() - before) / count / 1024:6.2f} KiB",
            flush=True,
        )
        del kept
    for size in (0, 600, 2000, 16000):
        gc.collect()
        before = heap_in_use()
        bios = []
        for _ in range(count):
            bio = ssl.MemoryBIO()
            bio.write(b"x" * size)
            bio.read()
            bios.append(bio)
        gc.collect()
        print(
            f"MemoryBIO after {size:5} bytes in and out: {(heap_in_use() - before) / count:7.0f} B",
            flush=True,
        )
        del bios


async def bulk(mode: str, cert: Path, key: Path, ca: Path, count: int) -> None:
    """``count`` connections each carry 1 MiB each way, one after another (the client in a
    thread): the heap each keeps afterwards, and the loop thread's CPU."""
    sctx, cctx = server_context(cert, key), client_context(ca)
    payload = b"x" * (1 << 20)
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.got = 0

        def data_received(self, data: bytes) -> None:
            self.got += len(data)

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port))
        return cctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def exchange(client: ssl.SSLSocket) -> None:
        client.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(client.recv(1 << 20))

    sinks: list[Sink] = []
    clients: list[ssl.SSLSocket] = []
    for _ in range(count):
        connecting = asyncio.ensure_future(asyncio.to_thread(connect))
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        sink = Sink()
        if mode == "tlslayer":
            await start_tls(conn, sctx, lambda sink=sink: sink, 10.0)  # type: ignore[misc]
        else:
            await loop.connect_accepted_socket(lambda sink=sink: sink, conn, ssl=sctx)  # type: ignore[misc]
        sinks.append(sink)
        clients.append(await connecting)
    gc.collect()
    before, cpu = heap_in_use(), time.thread_time()
    for sink, client in zip(sinks, clients, strict=True):
        sink.transport.write(payload)
        await asyncio.to_thread(exchange, client)
        while sink.got < len(payload):
            await asyncio.sleep(0.005)
    cpu = time.thread_time() - cpu
    await asyncio.sleep(0.3)
    gc.collect()
    print(
        f"bulk {mode:11} heap kept {(heap_in_use() - before) / count / 1024:8.1f} KiB a connection,"
        f" loop thread CPU {cpu * 1000 / count:.2f} ms a connection (1 MiB each way)",
        flush=True,
    )
    for client in clients:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pings", type=int, default=0, help="rounds of a record each way")
    parser.add_argument("--breakdown", action="store_true", help="OpenSSL's objects by stage")
    parser.add_argument("--bulk", type=int, default=0, help="connections carrying 1 MiB each way")
    parser.add_argument("--serve")
    parser.add_argument("--client", type=int)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--ca", type=Path)
    args = parser.parse_args()
    if args.serve:
        server_main(args.serve, args.count, args.cert, args.key, args.pings)
        return
    if args.client:
        import uvloop

        uvloop.run(client_main(args.client, args.count, args.ca, args.pings))
        return
    print(f"load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ca = make_cert(Path(tmp))
        if args.breakdown:
            breakdown(cert, key, ca, args.count)
        if args.bulk:
            import uvloop

            for _ in range(args.repeat):
                for mode in ("uvloop-tls", "tlslayer"):
                    uvloop.run(bulk(mode, cert, key, ca, args.bulk))
        if args.breakdown or args.bulk:
            return
        for _ in range(args.repeat):
            for mode in args.modes.split(","):
                result = run_mode(mode, args.count, cert, key, ca, args.pings)
                print(
                    f"{mode:12} N={result['count']:5}  RSS {result['rss_per_conn'] / 1024:6.2f} KiB"
                    f"  heap {result['heap_per_conn'] / 1024:6.2f} KiB"
                    f"  slab(both ends) {result['slab_per_conn_pair'] / 1024:6.2f} KiB"
                    f"  tcp pages {result['tcp_mem_pages']}"
                    f"  base RSS {result['rss_before'] / 2**20:.1f} MiB"
                    f"  handshake CPU {result['handshake_cpu_ms']:.2f} ms"
                    f"  record CPU {result['ping_cpu_us']:.1f} us",
                    flush=True,
                )
    print(f"load {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
