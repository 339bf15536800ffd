"""What an image file is and how large it decodes, read from its header: no decoder runs (issue 15 item 10).

A decoder allocates what a header claims before it reads the body: a 69-byte PNG can claim 3.6 Gpx and a 875 KB one
inflate to 900 Mpx (5.3 GB). So the infer job reads the type from the magic bytes and the size from the header here,
checks them against its limits, and only then decodes. Pure stdlib over a seekable binary stream, so every malformed
header is a unit test.

Accepted: PNG (IHDR), JPEG (the first SOF frame header), BMP (core and info headers), WebP (VP8, VP8L, VP8X) and TIFF
(classic and BigTIFF, the first image, with its tile size: a decoder buffers one whole tile). Everything else is refused
by content, whatever its file name says. Errors (both ``ValueError``; ``str()`` is the reason a user reads):
:class:`NotAnImage` for content with no accepted signature, :class:`BadHeader` for a signature whose header cannot be
read.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

ACCEPTED = "PNG, JPEG, BMP, WebP or TIFF"
MAX_JPEG_SEGMENTS = 1000  # real files have < 20 before the image data; bounds the walk over a hostile one
MAX_JPEG_FILL = 64  # 0xFF fill bytes allowed before a marker (encoders write none)
MAX_TIFF_ENTRIES = 1000
MAX_TIFF_BITS = 16  # 32/64-bit float samples would make a decoder buffer 4-8 bytes per sample
MAX_TIFF_SAMPLES = 4
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SOS, _JPEG_EOI = 0xDA, b"\xff\xd9"
_OTHER_FORMATS = {b"GIF87a": "GIF", b"GIF89a": "GIF", b"\x00\x00\x00\x0cjP  ": "JPEG 2000", b"%PDF": "PDF"}


class NotAnImage(ValueError):
    """The content carries no signature of an accepted image format (whatever the file is named)."""


class BadHeader(ValueError):
    """The content starts like an accepted format but its header cannot be read or is impossible."""


@dataclass(frozen=True)
class ImageHeader:
    """An image's format and size as its header declares them, read before any decode."""

    format: str
    width: int
    height: int
    tile: tuple[int, int] | None = None  # TIFF tiles (width, height): what a decoder buffers at once

    @property
    def pixels(self) -> int:
        """Pixels of the decoded image: what decoding it costs in memory."""
        return self.width * self.height


def _read(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    data = stream.read(size)
    if len(data) < size:
        raise BadHeader(f"the file ends before byte {offset + size}, inside the header")
    return data


def _sized(fmt: str, width: int, height: int, tile: tuple[int, int] | None = None) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise BadHeader(f"it declares an empty image ({width}x{height})")
    return ImageHeader(fmt, width, height, tile)


def _png(stream: BinaryIO) -> ImageHeader:
    length, kind, body, crc = struct.unpack(">I4s13sI", _read(stream, 8, 25))
    if length != 13 or kind != b"IHDR":
        raise BadHeader("the first chunk is not a 13-byte IHDR")
    if zlib.crc32(kind + body) != crc:
        raise BadHeader("the IHDR checksum does not match")
    width, height = struct.unpack(">II", body[:8])
    return _sized("PNG", width, height)


def _jpeg_marker(stream: BinaryIO, offset: int) -> tuple[int, int]:
    """The marker at ``offset`` (after its 0xFF fill bytes) and the offset just past it."""
    stream.seek(offset)
    window = stream.read(MAX_JPEG_FILL + 2)
    if not window:
        raise BadHeader(f"the file ends before byte {offset + 1}, inside the header")
    run = len(window) - len(window.lstrip(b"\xff"))
    if run == 0:
        raise BadHeader(f"no marker at byte {offset}")
    if run == len(window):
        raise BadHeader(f"only 0xFF fill bytes from byte {offset}, no marker")
    return window[run], offset + run + 1


def _jpeg_segments(stream: BinaryIO) -> Iterator[tuple[int, int, int]]:
    """(marker, payload offset, payload length) of each segment up to and including the first start of scan."""
    offset = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        marker, offset = _jpeg_marker(stream, offset)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers carry no length
            continue
        if marker in (0x00, 0xD8, 0xD9):
            raise BadHeader(f"marker FF{marker:02X} before the image data")
        (length,) = struct.unpack(">H", _read(stream, offset, 2))
        if length < 2:
            raise BadHeader(f"a segment of length {length} at byte {offset}")
        yield marker, offset + 2, length - 2
        if marker == _JPEG_SOS:
            return
        offset += length
    raise BadHeader(f"more than {MAX_JPEG_SEGMENTS} segments before the image data")


def _jpeg(stream: BinaryIO) -> ImageHeader:
    for marker, offset, length in _jpeg_segments(stream):
        if marker == _JPEG_SOS:
            break
        if marker in _JPEG_FRAMES:
            if length < 6:
                raise BadHeader(f"a {length}-byte frame header")
            height, width = struct.unpack(">HH", _read(stream, offset + 1, 4))
            if height == 0:
                raise BadHeader("the height is left to a DNL marker (not supported)")
            return _sized("JPEG", width, height)
    raise BadHeader("image data before any frame header")


def _bmp(stream: BinaryIO) -> ImageHeader:
    (info,) = struct.unpack("<I", _read(stream, 14, 4))
    if info == 12:
        width, height, _, bits = struct.unpack("<HHHH", _read(stream, 18, 8))
    elif 40 <= info <= 124:
        width, height, _, bits = struct.unpack("<iiHH", _read(stream, 18, 12))
    else:
        raise BadHeader(f"an unknown {info}-byte info header")
    if bits not in (1, 4, 8, 16, 24, 32):
        raise BadHeader(f"{bits} bits per pixel")
    return _sized("BMP", width, abs(height))  # a negative height means rows top-down


def _webp(stream: BinaryIO) -> ImageHeader:
    chunk, data = struct.unpack("<4s4x10s", _read(stream, 12, 18))
    if chunk == b"VP8X":  # extended: the canvas size, 24 bits each, minus one
        return _sized("WebP", 1 + int.from_bytes(data[4:7], "little"), 1 + int.from_bytes(data[7:10], "little"))
    if chunk == b"VP8L":  # lossless: signature 0x2F, then 14 bits each, minus one
        if data[0] != 0x2F:
            raise BadHeader("no VP8L signature")
        (bits,) = struct.unpack("<I", data[1:5])
        return _sized("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14 bits each
        if data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
            raise BadHeader("no VP8 key frame")
        width, height = struct.unpack("<HH", data[6:10])
        return _sized("WebP", width & 0x3FFF, height & 0x3FFF)
    raise BadHeader(f"an unknown first chunk {chunk!r}")


_TIFF_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8: the types size tags use
_TIFF_TAGS = {256: "width", 257: "height", 258: "bits", 277: "samples", 322: "tile width", 323: "tile height"}


def _tiff_tags(stream: BinaryIO, order: str, big: bool, ifd: int) -> dict[int, tuple[int, ...]]:
    """The size tags of the first image file directory, each as its tuple of values."""
    count_fmt, entry_fmt, entry_size, inline = ("Q", "HHQ8s", 20, 8) if big else ("H", "HHI4s", 12, 4)
    (count,) = struct.unpack(order + count_fmt, _read(stream, ifd, struct.calcsize(count_fmt)))
    if not 0 < count <= MAX_TIFF_ENTRIES:
        raise BadHeader(f"{count} directory entries")
    table = _read(stream, ifd + struct.calcsize(count_fmt), count * entry_size)
    tags: dict[int, tuple[int, ...]] = {}
    for tag, kind, n, field in struct.iter_unpack(order + entry_fmt, table):
        if tag not in _TIFF_TAGS:
            continue
        if kind not in _TIFF_TYPES or not 0 < n <= 16:
            raise BadHeader(f"its {_TIFF_TAGS[tag]} tag has type {kind} and {n} values")
        fmt = order + _TIFF_TYPES[kind] * n
        size = struct.calcsize(fmt)
        values = field[:size]
        if size > inline:  # the field holds the offset of the values
            values = _read(stream, struct.unpack(order + ("Q" if big else "I"), field)[0], size)
        tags[tag] = struct.unpack(fmt, values)
    return tags


def _tiff(stream: BinaryIO) -> ImageHeader:
    head = _read(stream, 0, 16)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    ifd = struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0]
    tags = _tiff_tags(stream, order, big, ifd)
    if 256 not in tags or 257 not in tags:
        raise BadHeader("the first image has no width or height")
    if max(tags.get(258, (1,))) > MAX_TIFF_BITS or tags.get(277, (1,))[0] > MAX_TIFF_SAMPLES:
        raise BadHeader(f"{tags.get(277, (1,))[0]} samples of {max(tags.get(258, (1,)))} bits (at most 4 of 16)")
    tile = (tags[322][0], tags[323][0]) if 322 in tags and 323 in tags else None
    if tile is not None and min(tile) <= 0:
        raise BadHeader(f"empty tiles ({tile[0]}x{tile[1]})")
    return _sized("TIFF", tags[256][0], tags[257][0], tile)


_FORMATS: list[tuple[str, Callable[[bytes], bool], Callable[[BinaryIO], ImageHeader]]] = [
    ("PNG", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), _png),
    ("JPEG", lambda h: h.startswith(b"\xff\xd8\xff"), _jpeg),
    ("BMP", lambda h: h.startswith(b"BM"), _bmp),
    ("WebP", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP", _webp),
    ("TIFF", lambda h: h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
]


def read_header(stream: BinaryIO) -> ImageHeader:
    """The format and declared size of the image in ``stream``; raises NotAnImage or BadHeader, never decodes."""
    stream.seek(0)
    head = stream.read(16)
    for name, matches, parse in _FORMATS:
        if matches(head):
            try:
                return parse(stream)
            except BadHeader as exc:
                raise BadHeader(f"unreadable {name} header: {exc}") from None
    other = next((name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if other:
        raise NotAnImage(f"{other} is not accepted (only {ACCEPTED})")
    detail = f"the content is not {ACCEPTED}" if head else "an empty file"
    raise NotAnImage(f"not an image ({detail})")


def sniff(data: bytes) -> ImageHeader:
    """:func:`read_header` over bytes in memory (the exact bytes that will be decoded)."""
    return read_header(io.BytesIO(data))


def truncation(data: bytes, header: ImageHeader) -> str | None:
    """Why a body whose header read fine is cut short, or None: a decoder may fill the rest with grey instead."""
    if header.format == "JPEG":
        try:
            scan = [at + size for marker, at, size in _jpeg_segments(io.BytesIO(data)) if marker == _JPEG_SOS]
        except BadHeader:
            scan = []
        if not scan:
            return "truncated JPEG (it ends before its image data)"
        # searched from the end: an EOI closes the file (or precedes a trailer), and scan data cannot contain one
        return None if data.rfind(_JPEG_EOI, scan[0]) >= 0 else "truncated JPEG (no end-of-image marker)"
    if header.format == "PNG":
        return None if data.rfind(b"\x00\x00\x00\x00IEND") > 8 else "truncated PNG (no IEND chunk)"
    if header.format == "WebP":
        (size,) = struct.unpack("<I", data[4:8])
        return None if len(data) >= 8 + size else f"truncated WebP ({len(data)} of {8 + size} bytes)"
    if header.format == "BMP":
        return _bmp_truncation(data, header)
    return None  # TIFF: libtiff checks each strip and tile against the file itself


def _bmp_truncation(data: bytes, header: ImageHeader) -> str | None:
    start, info = struct.unpack("<10xII", data[:18])
    if info == 12:  # the core header has no compression field: always uncompressed
        (bits,), compression = struct.unpack("<H", data[24:26]), 0
    else:
        bits, compression = struct.unpack("<HI", data[28:34])
    if compression not in (0, 3):  # run-length encoded: its length is not known from the header
        return None
    need = start + (header.width * bits + 31) // 32 * 4 * header.height
    return None if len(data) >= need else f"truncated BMP ({len(data)} of {need} bytes)"
