"""TLS material for the SuperLink and authentication keys for the SuperNodes.

- :func:`make_test_certificates` — a throw-away CA and a server certificate for the
  SuperLink (testing only: a real deployment uses the hospital's own PKI);
- :func:`make_node_keys` — a SuperNode's EC key pair (OpenSSH format, what
  ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read).

Private keys are written with mode 0600 (:func:`write_private`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpit.deploy.errors import DeployError

KEY_MODE = 0o600
LOOPBACK = ("127.0.0.1", "localhost")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable and writable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    try:
        os.fchmod(fd, KEY_MODE)  # also when the file existed with wider permissions
        os.write(fd, data)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a test CA and the SuperLink's server certificate.

    Attributes:
        ca_cert: The CA certificate: SuperNodes (``--root-certificates``) and the
            ``flwr`` CLI (``root-certificates``) trust it; the SuperLink also takes it
            as ``--ssl-ca-certfile``.
        ca_key: The CA's private key (0600). Keep it offline; it is only needed to
            issue more certificates.
        server_cert: The SuperLink's certificate (``--ssl-certfile``).
        server_key: The SuperLink's private key (``--ssl-keyfile``, 0600).
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _san(hosts: Iterable[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_test_certificates(
    directory: str | Path,
    hosts: Sequence[str] = LOOPBACK,
    days: int = 30,
) -> TlsFiles:
    """Create a local CA and a SuperLink server certificate signed by it (for testing).

    The server certificate names every entry of ``hosts`` (IP addresses and DNS names)
    as a subject alternative name, which is what TLS clients verify. Include 127.0.0.1
    when the SuperLink listens on 0.0.0.0: Flower 1.41's SuperLink then starts its
    SuperExec against ``127.0.0.1:PORT`` over TLS (and a run stays pending if that
    handshake fails). Private keys are written with mode 0600.

    Args:
        directory: Where to write ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``.
        hosts: Names and addresses under which SuperNodes and the CLI reach the SuperLink.
        days: Validity of both certificates.

    Returns:
        The paths of the four files.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise DeployError("make_test_certificates: name at least one host")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedPIT test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    files = TlsFiles(
        ca_cert=out / "ca.pem",
        ca_key=out / "ca.key",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
    )
    write_private(files.ca_key, key_pem(ca_key))
    write_private(files.server_key, key_pem(server_key))
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return files


@dataclass(frozen=True)
class NodeKeys:
    """A SuperNode's authentication key pair.

    Attributes:
        private_key: OpenSSH private key (0600); stays on the node
            (``flower-supernode --auth-supernode-private-key``).
        public_key: OpenSSH public key; given to the SuperLink operator, who registers
            it (``flwr supernode register``).
    """

    private_key: Path
    public_key: Path


def make_node_keys(directory: str | Path, name: str) -> NodeKeys:
    """Create a SuperNode's EC (NIST P-384) key pair in OpenSSH format.

    Equivalent to ``ssh-keygen -t ecdsa -b 384 -N "" -f DIRECTORY/NAME``.

    Args:
        directory: Where to write ``NAME`` (private, 0600) and ``NAME.pub``.
        name: File name of the pair, e.g. the hospital's name.

    Returns:
        The paths of the two files.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or "/" in name or name.startswith("."):
        raise DeployError(f"node key name {name!r}: use a plain file name, e.g. hospital-a")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keys = NodeKeys(out / name, out / f"{name}.pub")
    write_private(keys.private_key, private)
    keys.public_key.write_bytes(public + f" {name}\n".encode())
    return keys
