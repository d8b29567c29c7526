"""The agent channel's own CA and server certificate, made on the first start.

Agents pin the CA (its fingerprint rides in every enrollment token), so the
server needs no certificate from a public authority for them. The files live in
``DATA_DIR/tls``; an operator who wants their own puts ``ca.pem``,
``agent-cert.pem`` and ``agent-key.pem`` there before the first start (no CA
key needed then). Every node of a cluster must hold the same files.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobfleet.domain.enrollment import ca_fingerprint

log = logging.getLogger(__name__)

CA_YEARS = 20
CERT_DAYS = 3650
# a certificate this close to its end is issued again at start (when the CA key is here)
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class AgentTLS:
    ca_pem: str
    fingerprint: str
    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_ca(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jobfleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"jobfleet agent CA {socket.gethostname()}"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / "ca.key", _key_pem(key))
    _write_private(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    log.info("agent_ca_created path=%s", directory / "ca.pem")


def _issue(directory: Path, hosts: list[str]) -> None:
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", socket.gethostname(), "127.0.0.1", "::1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if host:
                names.append(x509.DNSName(host))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobfleet agent gateway")])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(directory / "agent-key.pem", _key_pem(key))
    _write_private(directory / "agent-cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    log.info("agent_certificate_issued path=%s", directory / "agent-cert.pem")


def _needs_issue(directory: Path) -> bool:
    cert_file, key_file = directory / "agent-cert.pem", directory / "agent-key.pem"
    if not cert_file.exists() or not key_file.exists():
        return True
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.not_valid_after_utc - RENEW_BEFORE < _now()


def ensure_agent_tls(data_dir: Path, hosts: list[str]) -> AgentTLS:
    """The agent channel's CA and certificate, made if missing (first start)."""
    directory = data_dir / "tls"
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    if not (directory / "ca.pem").exists():
        _make_ca(directory)
    if (directory / "ca.key").exists() and _needs_issue(directory):
        _issue(directory, hosts)
    ca_pem = (directory / "ca.pem").read_text()
    return AgentTLS(
        ca_pem=ca_pem,
        fingerprint=ca_fingerprint(ca_pem),
        cert_file=directory / "agent-cert.pem",
        key_file=directory / "agent-key.pem",
    )
