"""Image files for the infer tests: honest ones encoded by OpenCV, hostile ones written byte by byte (stdlib)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encoded(ext: str, width: int = 48, height: int = 32, *params: int, channels: int = 3) -> bytes:
    """A real ``ext`` file (".png", ".jpg", ...) of random pixels, as OpenCV writes it."""
    import cv2

    shape = (height, width, channels) if channels > 1 else (height, width)
    pixels = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    ok, data = cv2.imencode(ext, pixels, list(params))
    assert ok, ext
    return bytes(data.tobytes())


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, idat: bytes = b"", *, colour: int = 0) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (8-bit, grey by default) around the given IDAT data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` x ``height`` black pixels: about a thousandth of its decoded size on disk."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row
    return png(width, height, b"".join(packer.compress(row) for _ in range(height)) + packer.flush())


def tiff(width: int, height: int, *, order: str = "<", extra: dict[int, tuple[int, int, bytes]] | None = None) -> bytes:
    """A classic TIFF header and first directory (no pixel data): 8-bit RGB unless ``extra`` overrides a tag.

    ``extra`` maps a tag to (type, count, value field of 4 bytes); values that do not fit go after the directory."""
    tags: dict[int, tuple[int, int, bytes]] = {
        256: (4, 1, struct.pack(order + "I", width)),
        257: (4, 1, struct.pack(order + "I", height)),
        258: (3, 1, struct.pack(order + "HH", 8, 0)),
        277: (3, 1, struct.pack(order + "HH", 3, 0)),
    } | (extra or {})
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = b"".join(
        struct.pack(order + "HHI", tag, kind, n) + field for tag, (kind, n, field) in sorted(tags.items())
    )
    return magic + struct.pack(order + "I", 8) + struct.pack(order + "H", len(tags)) + entries + bytes(4)
