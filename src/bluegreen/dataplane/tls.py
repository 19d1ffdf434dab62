"""A self-signed certificate for local use, made when none is configured."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bluegreen.dataplane.files import write_atomic

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"


def self_signed(
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"), *, days: int = 365
) -> tuple[bytes, bytes]:
    """A new (certificate PEM, private key PEM) valid for ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(directory: Path) -> tuple[Path, Path]:
    """``directory``/cert.pem and key.pem (mode 0600), generated if either is missing."""
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    if not (cert.exists() and key.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        cert_pem, key_pem = self_signed()
        write_atomic(key, key_pem, mode=0o600)
        write_atomic(cert, cert_pem, mode=0o600)
    return cert, key
