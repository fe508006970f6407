"""Throwaway certificates for TLS tests: a CA, a server certificate it signed, and client certificates from it
and from a second, unrelated CA. Elliptic-curve keys, so that making them all takes milliseconds."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Identity", "Certificates", "make_certificates"]


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA that signed `server` and `client`
    server: Identity  # SAN: DNS localhost, IP 127.0.0.1
    client: Identity
    other_ca: Path  # a CA that has nothing to do with the server
    stranger: Identity  # a client certificate signed by `other_ca`

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(directory: Path, name: str) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, _name(name), key.public_key())
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
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    _write_cert(path, cert)
    return cert.subject, key, path


def _leaf(
    directory: Path,
    name: str,
    ca: tuple[x509.Name, ec.EllipticCurvePrivateKey, Path],
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName] | None = None,
) -> Identity:
    issuer, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(name, issuer, key.public_key()).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    identity = Identity(directory / f"{name}.pem", directory / f"{name}.key")
    _write_cert(identity.cert, builder.sign(ca_key, hashes.SHA256()))
    _write_key(identity.key, key)
    return identity


def make_certificates(directory: Path) -> Certificates:
    """Writes every certificate and key into `directory` as PEM files."""
    ca = _ca(directory, "ca")
    other_ca = _ca(directory, "other-ca")
    server_san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    return Certificates(
        ca=ca[2],
        server=_leaf(directory, "server", ca, ExtendedKeyUsageOID.SERVER_AUTH, server_san),
        client=_leaf(directory, "client", ca, ExtendedKeyUsageOID.CLIENT_AUTH),
        other_ca=other_ca[2],
        stranger=_leaf(directory, "stranger", other_ca, ExtendedKeyUsageOID.CLIENT_AUTH),
    )
