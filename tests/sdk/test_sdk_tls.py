"""HTTPS to a real loopback server: the certificate is checked unless told otherwise,
and a private CA is trusted through SSL_CERT_FILE."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.sdk.hostile import hostile_server, whole

from jobfleet.sdk import JobApiError, JobClient

OK = b'{"result": true, "code": 0, "data": {"username": "u"}}'


@pytest.fixture
def server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobfleet-sdk-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_a_certificate_no_trusted_ca_signed_is_refused_by_default(
    server_tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context, _ = server_tls
    with (
        hostile_server(whole("200 OK", OK), context) as server,
        JobClient(server.url, "a", "s3cret", "u") as client,
        pytest.raises(JobApiError, match="CERTIFICATE_VERIFY_FAILED") as caught,
    ):
        client.whoami()
    assert "SSL_CERT_FILE" in caught.value.message
    assert server.requests == []  # nothing, credentials least of all, was sent


def test_a_private_ca_in_ssl_cert_file_is_trusted(
    server_tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, cert = server_tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with (
        hostile_server(whole("200 OK", OK), context) as server,
        JobClient(server.url, "a", "s", "u") as client,
    ):
        assert client.whoami() == {"username": "u"}
