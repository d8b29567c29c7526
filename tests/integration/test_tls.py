"""Server and agents over HTTPS/WSS with a certificate the agent verifies."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.integration.harness import TEST_ENGINE, Running, Wire, bound_socket, serve_on

from jobfleet.agent.channel import pinned_context
from jobfleet.agent.client import Agent, AgentSettings
from jobfleet.server import EngineSettings, Server, ServerSettings, read_bootstrap


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobfleet-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_agents_verify_the_server_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sock = bound_socket()
    settings = ServerSettings(data_dir=tmp_path / "server", port=sock.getsockname()[1],
                              engine=EngineSettings(**TEST_ENGINE), heartbeat=2.0,
                              log_level="warning",
                              tls_cert=cert, tls_key=key)
    assert settings.url.startswith("https://")
    server = Server(settings)
    uv = server.listener()
    task = await serve_on(uv, sock)
    boot = read_bootstrap(settings.data_dir)
    untrusting = Agent(AgentSettings(server=settings.url, state_dir=tmp_path / "a0",
                                     ip="127.0.0.3", enroll_token=boot["enroll_token"]))
    agent = Agent(AgentSettings(server=settings.url, state_dir=tmp_path / "a1", ip="127.0.0.2",
                                enroll_token=boot["enroll_token"], ca_file=cert, heartbeat=2.0))
    runner = asyncio.create_task(agent.run_forever())
    wire = Wire(settings.url, boot["bk_app_code"], boot["bk_app_secret"])
    await wire.http.aclose()
    trusted = ssl.create_default_context(cafile=str(cert))
    wire.http = httpx.AsyncClient(base_url=settings.url, verify=trusted, trust_env=False,
                                  timeout=60)
    try:
        try:
            await untrusting.run_forever()
            raise AssertionError("an agent enrolled over an unverified certificate")
        except ssl.SSLError as exc:  # the agent's stdlib HTTP: the socket's own error
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
        await asyncio.wait_for(agent.connected.wait(), 20)
        sub = await wire.run_script("echo over tls", ["127.0.0.2"])
        data = await wire.wait(sub["job_instance_id"])
        assert data["job_instance"]["status"] == 3
        logs = await wire.logs(sub["job_instance_id"], sub["step_instance_id"], ["127.0.0.2"])
        assert logs["127.0.0.2"] == "over tls\n"
    finally:
        await agent.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await wire.close()
        uv.should_exit = True
        await task


async def test_the_agent_port_issues_no_session_tickets(running: Running) -> None:
    # no agent resumes a TLS session (one request to enroll, then one long connection):
    # a ticket would be CPU spent on both ends of each of thousands of handshakes
    ca = running.server.services.agent_channel.ca_pem
    assert ca is not None
    context = pinned_context(ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # where tickets come after the handshake
    port = running.server.services.agent_channel.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    tls = writer.get_extra_info("ssl_object")
    assert tls.version() == "TLSv1.3"
    # tickets arrive before the answer: by now the session would hold one
    assert tls.session is not None and not tls.session.has_ticket
    writer.close()


async def test_the_api_port_over_tls_keeps_what_its_clients_rely_on(tmp_path: Path) -> None:
    """Through its handshake gate and TLS layer the API port still serves: WebSocket
    upgrades (agents with ``agent_plaintext`` talk wss there), several requests on one
    kept-alive connection, resumed TLS sessions (browsers and the SDK reconnect), the
    https scheme the console's cookie is marked Secure by."""
    cert, key = self_signed(tmp_path)
    sock = bound_socket()
    settings = ServerSettings(data_dir=tmp_path / "server", port=sock.getsockname()[1],
                              engine=EngineSettings(**TEST_ENGINE), heartbeat=2.0,
                              log_level="warning", tls_cert=cert, tls_key=key,
                              agent_plaintext=True)
    server = Server(settings)
    uv = server.listener()
    task = await serve_on(uv, sock)
    boot = read_bootstrap(settings.data_dir)
    agent = Agent(AgentSettings(server=settings.url, state_dir=tmp_path / "a1", ip="127.0.0.2",
                                enroll_token=boot["enroll_token"], ca_file=cert, heartbeat=2.0))
    runner = asyncio.create_task(agent.run_forever())
    trusted = ssl.create_default_context(cafile=str(cert))
    wire = Wire(settings.url, boot["bk_app_code"], boot["bk_app_secret"])
    await wire.http.aclose()
    wire.http = httpx.AsyncClient(base_url=settings.url, verify=trusted, trust_env=False,
                                  timeout=60)
    try:
        await asyncio.wait_for(agent.connected.wait(), 20)
        sub = await wire.run_script("echo over the api port", ["127.0.0.2"])
        data = await wire.wait(sub["job_instance_id"])
        assert data["job_instance"]["status"] == 3
        logs = await wire.logs(sub["job_instance_id"], sub["step_instance_id"], ["127.0.0.2"])
        assert logs["127.0.0.2"] == "over the api port\n"

        # three requests, one connection; then the session resumed on the next one
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port, ssl=trusted,
                                                       server_hostname="127.0.0.1")
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        session = writer.get_extra_info("ssl_object").session
        assert session is not None and session.has_ticket
        writer.close()
        # asyncio's streams take no session to offer: a socket of the ssl module's does
        raw = socket.create_connection(("127.0.0.1", settings.port), timeout=10)
        resumed = await asyncio.to_thread(
            trusted.wrap_socket, raw, server_hostname="127.0.0.1", session=session)
        assert resumed.session_reused
        resumed.close()

        # the login's cookie is Secure: the console saw https ("auto")
        async with httpx.AsyncClient(base_url=settings.url, verify=trusted, trust_env=False,
                                     follow_redirects=False, timeout=60) as http:
            login = await http.post("/login", data={
                "username": "admin", "password": boot["admin_password"], "next": "/"})
            assert login.status_code == 303, login.text
            [cookie] = [c for c in login.headers.get_list("set-cookie")
                        if c.startswith("jobfleet_session=")]
        assert "secure" in {p.strip().split("=")[0].lower() for p in cookie.split(";")[1:]}
        assert [g.port for g in server.monitor.api_handshake_gates] == ["api"]
    finally:
        await agent.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await wire.close()
        uv.should_exit = True
        await task
