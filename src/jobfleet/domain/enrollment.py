"""Enrollment tokens that carry the fingerprint of the server's agent CA.

A token reads ``SECRET.FINGERPRINT``: the secret is what the server checks, the
fingerprint (hex SHA-256 of the CA certificate's DER bytes, as kubeadm's
``--discovery-token-ca-cert-hash``) is what the agent pins before it sends the
secret anywhere. A bare ``SECRET`` is a token for a server whose agents talk
plain HTTP (``--agent-plaintext``).
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass

FINGERPRINT = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class EnrollToken:
    secret: str
    ca_fingerprint: str | None


def compose(secret: str, ca_fingerprint: str | None) -> str:
    return f"{secret}.{ca_fingerprint}" if ca_fingerprint else secret


def parse(token: str) -> EnrollToken:
    """A token as given; raises ValueError for a malformed one."""
    token = token.strip()
    secret, dot, fingerprint = token.rpartition(".")
    if not dot:
        secret, fingerprint = token, ""
    if not secret or "." in secret or any(c.isspace() for c in secret):
        raise ValueError("the enrollment token is malformed")
    if dot and not FINGERPRINT.fullmatch(fingerprint):
        raise ValueError("the enrollment token's CA fingerprint is malformed")
    return EnrollToken(secret, fingerprint or None)


def ca_fingerprint(ca_pem: str) -> str:
    """The hex SHA-256 of a PEM certificate's DER bytes."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem)).hexdigest()


@dataclass(frozen=True)
class AgentChannel:
    """How agents reach this server, as the public bootstrap document says it.

    ``ca_pem`` is None when the operator let agents talk plain HTTP on the API
    port (``--agent-plaintext``); else agents dial ``port`` over TLS."""

    ca_pem: str | None
    port: int | None

    @property
    def plaintext(self) -> bool:
        return self.ca_pem is None

    @property
    def fingerprint(self) -> str | None:
        return ca_fingerprint(self.ca_pem) if self.ca_pem else None

    def token(self, secret: str) -> str:
        """What an operator hands an agent for ``secret``."""
        return compose(secret, self.fingerprint)
