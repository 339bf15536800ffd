"""What the detect API accepts as an image, decided from the bytes before anything decodes them (issue 16 item 5).

A detect request comes from a tenant's program over the network, so every upload is checked here first, in order:

1. **empty** → 400; **over the size cap** → 413 (the gate also cuts a body off while it streams);
2. **type by magic bytes only** (:mod:`tasks.image_header`): JPEG, PNG, WebP or BMP; TIFF, GIF, PDF and anything
   else → 415, whatever the Content-Type or file name claims. A header that starts right but cannot be read → 422;
3. **pixels** the header declares over the cap → 413: a decompression bomb (a ~1 MB PNG of 900 Mpx) is refused before
   a decoder allocates what it claims;
4. **truncated** (a decoder would fill the rest with grey and the model would see a different image) → 422;
5. **polyglot**: bytes after the image's end (a JPEG with a ZIP or an HTML page appended, data after a PNG's IEND, a
   WebP or BMP longer than its declared size) → 422. The replica never decodes them, but a file that is two things at
   once is not an honest camera frame, and whatever reads it next (a debug dump, a dataset) may take it for the other.

Errors are :class:`~tasks.errors.UploadRejected` carrying the HTTP status; nothing is queued for a refused upload.
"""

from __future__ import annotations

import struct

from tasks.errors import UploadRejected
from tasks.image_header import BadHeader, ImageHeader, NotAnImage, sniff, truncation

SERVED = ("JPEG", "PNG", "WebP", "BMP")
ONLY = "only JPEG, PNG, WebP or BMP"
JPEG_PADDING = 16  # bytes some encoders leave after the end-of-image marker (zeros, 0xFF fill, a newline)
_PADDING_BYTES = b"\x00\xff\r\n\t "
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"\x00\x00\x00\x00IEND"  # an IEND chunk's length (always 0) and type; its CRC follows


def check_upload(data: bytes, max_bytes: int, max_pixels: int) -> ImageHeader:
    """The header of an upload the replicas may decode, or UploadRejected (reason, status) before any decoder runs."""
    if not data:
        raise UploadRejected("empty upload: send an image (multipart field 'image', a raw body or {\"uri\"})", 400)
    if len(data) > max_bytes:
        raise UploadRejected(f"upload of {len(data)} bytes is over the {max_bytes}-byte limit", 413)
    try:
        header = sniff(data)
    except NotAnImage as err:  # its reason lists the infer job's formats: name the four served here instead
        what = str(err).partition(" (")[0]
        raise UploadRejected(f"unsupported upload: {what} ({ONLY})", 415) from None
    except BadHeader as err:
        raise UploadRejected(f"not a readable image: {err}", 422) from None
    if header.format not in SERVED:
        raise UploadRejected(f"unsupported upload: {header.format} is not accepted ({ONLY})", 415)
    if header.pixels > max_pixels:
        raise UploadRejected(f"image of {header.width}x{header.height} ({header.pixels / 1e6:.1f} Mpx) is over the "
                             f"{max_pixels / 1e6:g} Mpx limit", 413)  # fmt: skip
    if reason := truncation(data, header):
        raise UploadRejected(f"not a whole image: {reason}", 422)
    if reason := trailing(data, header):
        raise UploadRejected(f"not a plain image: {reason}", 422)
    return header


def trailing(data: bytes, header: ImageHeader) -> str | None:
    """Why ``data`` holds more than the one image its header starts (a polyglot), or None; for a whole image."""
    if header.format == "JPEG":
        end = data.rfind(_JPEG_EOI) + len(_JPEG_EOI)
        extra = data[end:]
        if len(extra) <= JPEG_PADDING and not extra.strip(_PADDING_BYTES):
            return None
        return f"{len(extra)} bytes after the JPEG's end-of-image marker"
    if header.format == "PNG":
        end = data.find(_PNG_IEND, 8) + len(_PNG_IEND) + 4  # the first IEND (truncation() found one) and its CRC
        if end > len(data):
            return "the PNG's IEND chunk is cut short"
        return None if end == len(data) else f"{len(data) - end} bytes after the PNG's IEND chunk"
    if header.format == "WebP":
        (size,) = struct.unpack("<I", data[4:8])
        declared = 8 + size
    else:  # BMP: the file header's size field
        (declared,) = struct.unpack("<I", data[2:6])
    if declared == len(data):
        return None
    return f"{len(data)} bytes where the {header.format} header declares {declared}"
