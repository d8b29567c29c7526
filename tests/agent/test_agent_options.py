"""The agent's command line: read without argparse when plain, by argparse otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from jobfleet.agent.main import _values_attached, parser, plain_args, settings_from
from jobfleet.agent.settings import AgentSettings

BASE = ["--server", "http://127.0.0.1:8080", "--state-dir", "/var/lib/a", "--ip", "127.0.0.1"]
PLAIN = [
    BASE,
    [*BASE, "--server", "http://127.0.0.2:8080", "--label", "env=prod", "--label=role=web"],
    ["--ip=127.0.0.1", "--state-dir=/s", "--server=http://127.0.0.1", "--biz", "7",
     "--bk-cloud-id=3"],
    [*BASE, "--peer-port", "0", "--peer-listen", "::", "--peer-address", "127.0.0.1:7000"],
    [*BASE, "--ipv6", "auto", "--hostname", "", "--ca-file", "/etc/ca.pem", "--log-level=debug"],
    [*BASE, "--enroll-token-file", "/t", "--enroll-token", "secret"],
    # a value may start with a dash, as argparse reads it here
    [*BASE, "--label", "-x=1", "--hostname", "--biz"],
    [*BASE, "--max-backoff", "1.5"],
]
NOT_PLAIN = [
    ["--help"],
    ["-h"],
    [*BASE, "--serv", "http://127.0.0.2"],  # argparse allows abbreviations; it says what they mean
    [*BASE, "--biz", "two"],
    [*BASE, "--max-backoff", "soon"],
    [*BASE, "--peer-port"],
    ["--server", "http://127.0.0.1", "--ip", "127.0.0.1"],  # no --state-dir
    [*BASE, "extra"],
    [*BASE, "--unknown", "1"],
]


@pytest.mark.parametrize("argv", PLAIN)
def test_a_plain_command_line_reads_as_argparse_reads_it(argv: list[str]) -> None:
    p = parser()
    expected = vars(p.parse_args(_values_attached(p, argv)))
    got = plain_args(argv)
    assert got is not None
    assert vars(got) == expected


@pytest.mark.parametrize("argv", NOT_PLAIN)
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert plain_args(argv) is None


def test_defaults_are_not_shared_between_reads() -> None:
    first = plain_args([*BASE, "--label", "a=1"])
    second = plain_args(BASE)
    assert first is not None and second is not None
    assert first.label == ["a=1"] and second.label == []


def test_the_reconnect_cap_is_the_operators_to_set() -> None:
    """``--max-backoff`` reaches the agent's settings; without it the default holds."""
    def fail(message: str) -> NoReturn:
        raise AssertionError(message)

    given = plain_args([*BASE, "--max-backoff", "2.5"])
    default = plain_args(BASE)
    assert given is not None and default is not None
    assert settings_from(given, fail).max_backoff == 2.5
    assert settings_from(default, fail).max_backoff == AgentSettings.max_backoff


@pytest.mark.parametrize("value", ["0", "-1", "0.01", "nan", "inf", "86400"])
def test_a_reconnect_cap_out_of_range_is_refused(value: str) -> None:
    messages: list[str] = []

    def fail(message: str) -> NoReturn:
        messages.append(message)
        raise SystemExit(2)

    args = plain_args([*BASE, "--max-backoff", value])
    assert args is not None
    with pytest.raises(SystemExit):
        settings_from(args, fail)
    assert messages and messages[0].startswith("--max-backoff: ")
    assert "is not between 0.1 and 3600 seconds" in messages[0]


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobfleet", "agent", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "100",
                               # the tree under test, where it is not the one installed
                               **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})


def test_help_and_usage_errors_come_from_argparse(tmp_path: Path) -> None:
    shown = agent("--help")
    assert shown.returncode == 0 and "--peer-port" in shown.stdout
    assert "--enroll-token " not in shown.stdout  # the refused option is not offered
    missing = agent("--server", "http://127.0.0.1:1")
    assert missing.returncode == 2
    assert "the following arguments are required: --state-dir, --ip" in missing.stderr
    # a plain command line with a bad value: argparse's usage and the agent's message
    bad = agent(*BASE[:3], str(tmp_path / "s"), "--ip", "127.0.0.1", "--peer-port", "70000")
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage: jobfleet agent")
    assert "--peer-port: 70000 is not a TCP port" in bad.stderr
    token = agent(*BASE[:3], str(tmp_path / "s"), "--ip", "127.0.0.1", "--enroll-token", "x")
    assert token.returncode == 2 and "would show in ps" in token.stderr


def test_the_agent_says_its_release_and_what_it_speaks() -> None:
    """An operator (or an inventory script) asks an agent which release and protocol it
    runs without starting it: what the server serves it by (docs/deploy.md)."""
    from jobfleet import __version__
    from jobfleet.domain import protocol

    for argv in (["--version"], [*BASE, "--version"]):
        shown = agent(*argv)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == (
            f"jobfleet agent {__version__} (protocol {protocol.PROTOCOL_VERSION}; "
            f"capabilities: {' '.join(protocol.AGENT_CAPS)})\n")
    assert "--version" in agent("--help").stdout


def test_a_server_certificate_that_does_not_verify_ends_the_agent_with_one_line(
    tmp_path: Path,
) -> None:
    """An HTTPS server whose certificate is of a private CA the agent was not given
    (--ca-file): status 2 and a line that says what to do, not a traceback."""
    import contextlib
    import datetime
    import ipaddress
    import socket
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobfleet-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        # the agent hangs up in the handshake; nothing more is needed of this side
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                context.wrap_socket(conn, server_side=True)

    threading.Thread(target=serve, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("s3cret." + "0" * 64)
    token.chmod(0o600)
    try:
        shown = agent("--server", f"https://127.0.0.1:{port}", "--state-dir",
                      str(tmp_path / "state"), "--ip", "127.0.0.1",
                      "--enroll-token-file", str(token))
    finally:
        listener.close()
    assert shown.returncode == 2, shown.stderr
    assert "Traceback" not in shown.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in shown.stderr and "--ca-file" in shown.stderr
