"""The credentials that close SeaweedFS's own ports (infra/seaweed_security.py): a certificate every component both
serves and presents, signed by a CA whose key is never written; ``security.toml`` requiring it on every port but
S3's, plus JWT keys; nothing readable by others. The live refusals are tests/integration/test_store_surface.py."""

from __future__ import annotations

import ipaddress
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from infra.seaweed_security import GRPC_COMPONENTS, HTTPS_SERVERS, main, write_store_credentials

pytestmark = pytest.mark.unit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_component_certificate_is_signed_by_the_ca_and_names_loopback(tmp_path: Path) -> None:
    creds = write_store_credentials(tmp_path / "security")
    ca = x509.load_pem_x509_certificate(creds.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_no_ca_key_is_written_and_nothing_is_readable_by_others(tmp_path: Path) -> None:
    folder = tmp_path / "security"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # as an earlier version or a careless umask left it
    creds = write_store_credentials(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "security.toml", "store.crt", "store.key"]
    assert b"PRIVATE KEY" not in creds.ca.read_bytes() + creds.cert.read_bytes()
    assert _mode(folder) == 0o700
    assert {p.name: _mode(p) for p in folder.iterdir()} == dict.fromkeys(
        ["ca.crt", "security.toml", "store.crt", "store.key"], 0o600
    )


def test_security_toml_requires_the_certificate_everywhere_and_jwts_on_volume_and_filer(tmp_path: Path) -> None:
    creds = write_store_credentials(tmp_path / "security")
    config = tomllib.loads((creds.config_dir / "security.toml").read_text())
    assert config["grpc"]["ca"] == str(creds.ca)  # gRPC servers with a cert require a client cert signed by it
    for component in GRPC_COMPONENTS:
        assert (config["grpc"][component]["cert"], config["grpc"][component]["key"]) == (
            str(creds.cert),
            str(creds.key),
        )
    for server in ("master", "volume", "filer", "admin"):
        assert config["https"][server]["ca"] == str(creds.ca), f"{server} HTTP would take a client without a cert"
    assert set(HTTPS_SERVERS) == {"master", "volume", "filer", "admin"}
    assert config["https"]["client"]["enabled"] is True
    jwt = config["jwt"]
    keys = [jwt["signing"]["key"], jwt["signing"]["read"]["key"], jwt["filer_signing"]["key"],
            jwt["filer_signing"]["read"]["key"]]  # fmt: skip
    assert len(set(keys)) == 4 and all(len(key) == 64 for key in keys)


def test_each_start_gets_its_own_ca_and_keys(tmp_path: Path) -> None:
    first, second = write_store_credentials(tmp_path / "a"), write_store_credentials(tmp_path / "b")
    assert first.ca.read_bytes() != second.ca.read_bytes()
    assert (first.config_dir / "security.toml").read_text().replace(str(tmp_path / "a"), "") != (
        second.config_dir / "security.toml"
    ).read_text().replace(str(tmp_path / "b"), "")


def test_the_compose_one_shot_writes_once_and_keeps_what_the_volume_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "run-seaweedfs"
    assert main([str(folder)]) == 0
    written = (folder / "security.toml").read_bytes(), (folder / "ca.crt").read_bytes()
    assert main([str(folder)]) == 0
    assert ((folder / "security.toml").read_bytes(), (folder / "ca.crt").read_bytes()) == written
    assert "kept" in capsys.readouterr().out
    assert main([]) == 2
