"""SeaweedFS's own credentials for the local store: a throw-away CA, one mutual-TLS certificate, JWT keys.

``weed mini`` runs a master, a volume server, a filer, an S3 gateway and an admin server, each with an HTTP and a
gRPC port. Only the S3 port checks a signature; the others accept anyone on the host by default (a ``.pt`` planted
through the filer's HTTP port was unpickled on a worker: issue 15 item 1). The ``security.toml`` written here closes
them: every gRPC port and every HTTP port but S3's requires a client certificate signed by a CA created for this
start, whose private key is never written down (nobody can mint another certificate), and the volume server and the
filer also require JWTs signed with keys generated here (their unix sockets, which skip TLS, included). The
components present the one certificate to each other; files are 0600 in a 0700 folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=3650)  # a long-running `yoloq up` must never outlive its certificate
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
HTTPS_SERVERS = ("master", "volume", "filer", "admin")


@dataclass(frozen=True)
class StoreCredentials:
    """Where a store's TLS material and ``security.toml`` lie (``config_dir`` is passed as ``weed -config_dir``)."""

    config_dir: Path
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey,
                 ca: bool) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # cert and CRL signing
        builder = builder.add_extension(usage, critical=True)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]  # each component is both
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the first byte on (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _security_toml(ca: Path, cert: Path, key: Path) -> str:
    """The ``security.toml`` that requires the certificate on every port but S3's, plus JWTs on volume and filer."""
    pair = f'cert = "{cert}"\nkey = "{key}"\n'
    lines = [f'[grpc]\nca = "{ca}"\n']
    lines += [f"[grpc.{component}]\n{pair}" for component in GRPC_COMPONENTS]
    lines += [f'[https.{server}]\n{pair}ca = "{ca}"\n' for server in HTTPS_SERVERS]
    lines.append(f'[https.client]\nenabled = true\n{pair}ca = "{ca}"\n')
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines.append(f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n')
    lines.append("[access]\nui = false\n")
    return "\n".join(lines)


def write_store_credentials(folder: Path) -> StoreCredentials:
    """Create ``folder`` (0700) with a fresh CA certificate, the components' key pair and ``security.toml``."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("yoloq-store-ca", _name("yoloq-store-ca"), ca_key.public_key(), ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = _certificate("yoloq-store", ca_cert.subject, leaf_key.public_key(), ca_key, ca=False)
    paths = StoreCredentials(folder, folder / "ca.crt", folder / "store.crt", folder / "store.key")
    _write_private(paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.cert, leaf_cert.public_bytes(serialization.Encoding.PEM))
    pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(paths.key, pem)
    _write_private(folder / "security.toml", _security_toml(paths.ca, paths.cert, paths.key).encode())
    return paths


def main(argv: list[str]) -> int:
    """``python seaweed_security.py DIR``: docker-compose's one-shot; a volume that holds credentials keeps them
    (the running store reads them; ``docker compose down -v`` makes new ones)."""
    if len(argv) != 1:
        print("usage: seaweed_security.py DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    if (folder / "security.toml").exists():  # written last: a start that failed halfway is redone
        print(f"SeaweedFS credentials kept in {folder}")
        return 0
    write_store_credentials(folder)
    print(f"SeaweedFS credentials written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
