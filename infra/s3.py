"""The S3 object store (boto3): checkpoints, results and datasets; SeaweedFS locally, any S3 in production.

Every botocore error is translated into StorageError; a missing key into CheckpointError-free ``None`` returns
where absence is normal (a job with no checkpoint yet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from infra.settings import Settings
from tasks.errors import StorageError

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Store:
    """Byte and JSON objects under one bucket, addressed by key; ``uri(key)`` is the s3:// form users see."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self._settings = settings
        self._boto: Any = None

    @property
    def _client(self) -> Any:
        """The boto3 client, built on first use (it costs ~50 ms, which CLI reads should not pay)."""
        if self._boto is None:
            self._boto = self._make_client()
        return self._boto

    def _make_client(self) -> Any:
        settings = self._settings
        return boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key.get_secret_value() or None,
            aws_secret_access_key=settings.s3_secret_key.get_secret_value() or None,
            config=botocore.config.Config(
                connect_timeout=3, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}
            ),
        )

    def uri(self, key: str) -> str:
        """The s3:// URI of a key in this store's bucket."""
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (idempotent)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            self._call(self._client.create_bucket, Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object; S3 PUTs are atomic, a reader never sees half of it."""
        self._call(self._client.put_object, Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            body: bytes = response["Body"].read()
            return body
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise StorageError(f"S3 get {self.uri(key)} failed: {err}") from None
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(f"S3 get {self.uri(key)} failed: {err}") from None

    def get_prefix(self, bucket: str, key: str, max_bytes: int) -> bytes | None:
        """At most the first ``max_bytes + 1`` bytes of an object in ``bucket`` (a caller can tell that it is over its
        cap without downloading it all), or None when the object or bucket does not exist."""
        try:
            response = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")
            body: bytes = response["Body"].read(max_bytes + 1)
            return body
        except botocore.exceptions.ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code == "InvalidRange":  # S3 answers a range on an empty object with 416
                return b""
            if code in _MISSING | {"NoSuchBucket"}:
                return None
            raise StorageError(f"S3 get s3://{bucket}/{key} failed: {err}") from None
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(f"S3 get s3://{bucket}/{key} failed: {err}") from None

    def put_json(self, key: str, value: Any) -> None:
        """Write a JSON document."""
        self.put_bytes(key, json.dumps(value, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        """Read a JSON document, or None when absent."""
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def put_file(self, key: str, path: Path) -> int:
        """Upload a file (boto3 switches to multipart above 8 MiB) and return the size S3 now reports for it."""
        try:
            self._client.upload_file(str(path), self.bucket, key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as err:
            raise StorageError(f"S3 upload of {path} to {self.uri(key)} failed: {err}") from None
        head = self._call(self._client.head_object, Bucket=self.bucket, Key=key)
        return int(head["ContentLength"])

    def get_file(self, key: str, path: Path, bucket: str | None = None) -> bool:
        """Download one object to ``path``; False when it does not exist."""
        try:
            self._client.download_file(bucket or self.bucket, key, str(path))
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise StorageError(f"S3 download of s3://{bucket or self.bucket}/{key} failed: {err}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as err:
            raise StorageError(f"S3 download of s3://{bucket or self.bucket}/{key} failed: {err}") from None
        return True

    def delete(self, key: str) -> None:
        """Remove one object; S3 treats a missing key as success."""
        self._call(self._client.delete_object, Bucket=self.bucket, Key=key)

    def list_objects(self, prefix: str, bucket: str | None = None) -> list[tuple[str, int, str]]:
        """(key, size, etag) of every object under ``prefix``, sorted by key (all pages)."""
        found: list[tuple[str, int, str]] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket or self.bucket, Prefix=prefix
            ):
                found += [(o["Key"], int(o["Size"]), str(o.get("ETag", ""))) for o in page.get("Contents", [])]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(f"S3 list of s3://{bucket or self.bucket}/{prefix} failed: {err}") from None
        return sorted(found)

    def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise StorageError(f"S3 {method.__name__} on {self.bucket} failed: {err}") from None
