"""The local object store has no way in without credentials but signed S3 (issue 15 item 1a).

Before, SeaweedFS's master, volume and filer HTTP ports and every gRPC port answered anyone on the host: a ``.pt``
planted with ``curl -F file=@evil.pt http://127.0.0.1:$FILER/buckets/yoloq/planted/evil.pt`` was unpickled by an
export job. These tests find every TCP port and unix socket the running ``weed`` process tree listens on (not the
ports we think we configured), try the attacks on each, and then check through signed S3 that nothing was written.
Each refused port is also shown to answer a caller holding the store's certificate, so "refused" never means "dead".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import stat
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest

from infra.local_s3 import S3Service

pytestmark = pytest.mark.integration

PLANTED = "planted/evil.pt"
KEPT = "surface/kept.bin"
# An HTTP/2 client preface and an empty SETTINGS frame: a plaintext gRPC server answers with its own SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
Address = int | str  # a TCP port on 127.0.0.1, or a unix socket's path


def _listening(pid: int) -> tuple[set[int], set[str]]:
    """Every TCP port and unix socket path the process ``pid`` and its children listen on, as the kernel says."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    tcp = {c.laddr.port for p in procs for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    unix = {str(c.laddr) for p in procs for c in p.net_connections("unix") if isinstance(c.laddr, str) and c.laddr}
    return tcp, unix


def _connect(address: Address, tls: ssl.SSLContext | None) -> socket.socket:
    if isinstance(address, int):
        sock = socket.create_connection(("127.0.0.1", address), timeout=5)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(address)
    return tls.wrap_socket(sock, server_hostname="localhost") if tls else sock


def _exchange(address: Address, payload: bytes, tls: ssl.SSLContext | None = None) -> bytes:
    """What the server answers to ``payload`` until it closes (at most 64 KiB); ``b""`` when it refuses the
    connection, the TLS handshake or the request without a word."""
    chunks: list[bytes] = []
    try:
        with _connect(address, tls) as sock:
            sock.sendall(payload)
            while sum(map(len, chunks)) < 65536 and not (payload == H2_PREFACE and sum(map(len, chunks)) >= 9):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:  # refused, reset, TLS alert (ssl.SSLError is an OSError), or silence until the timeout
        pass
    return b"".join(chunks)


def _http(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


def _upload(path: str, data: bytes) -> bytes:
    """The multipart POST ``curl -F file=@evil.pt http://HOST/PATH`` sends."""
    boundary = "yoloqsurface" + os.urandom(6).hex()
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="evil.pt"\r\n'
    body = (part + "Content-Type: application/octet-stream\r\n\r\n").encode() + data
    body += f"\r\n--{boundary}--\r\n".encode()
    return _http("POST", path, body, f"Content-Type: multipart/form-data; boundary={boundary}")


def _attacks(bucket: str, fid: str) -> dict[str, bytes]:
    """The requests that read or wrote through SeaweedFS's own ports without credentials before the fix."""
    return {
        "GET /": _http("GET", "/"),
        "master assign": _http("GET", "/dir/assign"),
        "master lookup": _http("GET", "/dir/lookup?volumeId=1"),
        "cluster status": _http("GET", "/cluster/status"),
        "filer upload": _upload(f"/buckets/{bucket}/{PLANTED}", b"cos\nsystem\n(S'touch /tmp/owned'\ntR."),
        "filer read": _http("GET", f"/buckets/{bucket}/{KEPT}"),
        "volume read": _http("GET", f"/{fid}"),
        "gRPC": H2_PREFACE,
    }


def _answered(answer: bytes) -> str | None:
    """How the server served the request (``"HTTP 200"``, ``"HTTP/2 SETTINGS"``), or None when it refused it."""
    status = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", answer)
    if status and 200 <= int(status.group(1)) < 400:
        return f"HTTP {status.group(1).decode()}"
    if len(answer) >= 9 and answer[3] == 0x04 and answer[5:9] == b"\x00\x00\x00\x00":  # SETTINGS on stream 0
        return "HTTP/2 SETTINGS"
    return None


def _tls(store: S3Service, with_certificate: bool, payload: bytes = b"") -> ssl.SSLContext:
    """A TLS client for ``payload`` (HTTP/2 or HTTP/1.1) that trusts any server; it presents the store's certificate
    only ``with_certificate``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # an attacker does not care who answers
    context.set_alpn_protocols(["h2"] if payload == H2_PREFACE else ["http/1.1"])
    if with_certificate:
        context.load_cert_chain(store.credentials.cert, store.credentials.key)
    return context


def _b64(part: bytes) -> bytes:
    return base64.urlsafe_b64encode(part).rstrip(b"=")


def _filer_jwt(store: S3Service) -> str:
    """A read token for the filer, signed with the store's key (what the S3 gateway sends it)."""
    config = tomllib.loads((store.credentials.config_dir / "security.toml").read_text())
    claims = json.dumps({"exp": int(time.time()) + 60}).encode()
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + _b64(claims)
    key = config.get("jwt", {}).get("filer_signing", {}).get("read", {}).get("key", "").encode()  # none: ignored
    return (signing_input + b"." + _b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


def _fid_of_kept(store: S3Service) -> str:
    """The volume file id of the kept object, read from the filer's metadata as its owner reads it: with the store's
    certificate and JWT (or in plaintext from a store that wants neither, as before the fix: the test then fails on
    the attacks, not here)."""
    request = _http("GET", f"/buckets/{store.bucket}/{KEPT}?metadata=true", b"",
                    f"Authorization: Bearer {_filer_jwt(store)}")  # fmt: skip
    port = store.ports["filer.port"]
    answer = _exchange(port, request, _tls(store, with_certificate=True)) or _exchange(port, request)
    assert _answered(answer) == "HTTP 200", answer[:300]
    entry = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return str(entry["chunks"][0]["file_id"])


@pytest.fixture(scope="module")
def store(services: Any) -> S3Service:
    """The session's SeaweedFS, holding one object of the size that goes to a volume (not inline in the filer)."""
    s3: S3Service = services.s3
    _s3_client(s3).put_object(Bucket=s3.bucket, Key=KEPT, Body=b"kept" * 16384)
    return s3


def _s3_client(store: S3Service) -> Any:
    return boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.access_key,
                        aws_secret_access_key=store.secret_key, region_name="us-east-1")  # fmt: skip


def test_no_port_or_socket_but_s3_serves_a_caller_without_the_store_credentials(store: S3Service) -> None:
    # Given every TCP port and unix socket the weed process tree listens on
    tcp, unix = _listening(store.process.pid)
    assert store.ports["s3.port"] in tcp and store.ports["filer.port"] in tcp, (tcp, store.ports)
    assert tcp <= set(store.ports.values()), f"a port no option chose (a default such as 9333): {tcp}"
    targets: list[Address] = [*sorted(tcp - {store.ports["s3.port"]}), *sorted(unix)]
    attacks = _attacks(store.bucket, _fid_of_kept(store))
    # When each is sent every attack, in plaintext and over TLS without a client certificate
    served = [
        f"{target} {name}{' (TLS)' if tls else ''}: {how}"
        for target in targets
        for name, payload in attacks.items()
        for tls in (None, _tls(store, with_certificate=False, payload=payload))
        if (how := _answered(_exchange(target, payload, tls)))
    ]
    # Then none is served, and nothing was written
    assert served == []
    s3 = _s3_client(store)
    assert PLANTED not in [o["Key"] for o in s3.list_objects_v2(Bucket=store.bucket).get("Contents", [])]
    assert s3.get_object(Bucket=store.bucket, Key=KEPT)["Body"].read() == b"kept" * 16384


def test_each_refused_tcp_port_answers_the_store_certificate(store: S3Service) -> None:
    # Given the store's TCP ports but S3's (the refusals above are for lack of credentials, not a dead port)
    tcp, _ = _listening(store.process.pid)
    h2, http1 = _tls(store, True, H2_PREFACE), _tls(store, True, _http("GET", "/"))
    # When a client presents the store's certificate, Then each completes the handshake and answers
    for port in sorted(tcp - {store.ports["s3.port"]}):
        answer = _exchange(port, H2_PREFACE, h2) or _exchange(port, _http("GET", "/"), http1)
        assert answer, f"port {port} refused the store's own certificate"


def test_the_s3_port_wants_signed_requests_and_serves_them(store: S3Service) -> None:
    bucket_url = f"{store.endpoint}/{store.bucket}"
    for request in (urllib.request.Request(f"{bucket_url}/{KEPT}"),
                    urllib.request.Request(f"{bucket_url}/{PLANTED}", data=b"x", method="PUT")):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403, request.full_url
    s3 = _s3_client(store)
    s3.put_object(Bucket=store.bucket, Key="surface/signed.txt", Body=b"signed")
    assert s3.get_object(Bucket=store.bucket, Key="surface/signed.txt")["Body"].read() == b"signed"


def _shared(path: Path) -> str | None:
    """``path`` and its mode when it grants anything to the group or others (None too when it vanished meanwhile:
    the filer's LevelDB rotates its files)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    return f"{path} {stat.filemode(mode)}" if mode & 0o077 else None


def test_the_store_files_are_its_owners_alone(store: S3Service) -> None:
    # Given the store's folder (data, keys, certificates, sockets) and the sockets weed makes in /tmp
    root = store.credentials.config_dir.parent
    _, unix = _listening(store.process.pid)
    entries = [root.parent, root, *root.rglob("*"), *map(Path, unix)]
    # Then no folder, file or socket grants anything to the group or to others, but the volumes' .vif files: weed
    # writes those 0644 whatever the umask (a volume's version and replication, no data), inside the 0700 folders
    shared = [found for p in entries if not (p.suffix == ".vif" and p.parent == root) and (found := _shared(p))]
    assert shared == []
