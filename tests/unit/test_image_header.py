"""tasks/image_header.py: the type from the magic bytes and the size from the header, before any decode (issue 15
item 10). Honest files come from OpenCV and Pillow; every hostile header is written byte by byte."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from tasks.image_header import BadHeader, ImageHeader, NotAnImage, sniff, truncation
from tests.images import PNG_SIGNATURE, chunk, encoded, png, png_bomb, tiff

pytestmark = pytest.mark.unit


def _pillow(mode: str, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (40, 24), 90).save(buffer, fmt, **options)
    return buffer.getvalue()


def _bigtiff(width: int, height: int) -> bytes:
    entries = b"".join(struct.pack("<HHQQ", tag, 4, 1, value) for tag, value in ((256, width), (257, height)))
    return b"II+\x00" + struct.pack("<HHQQ", 8, 0, 16, 2) + entries + bytes(8)


# --- honest files: every accepted format and variant reads its true size ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (encoded(".png", 48, 32), "PNG"),
        (encoded(".png", 48, 32, channels=1), "PNG"),
        (encoded(".jpg", 48, 32), "JPEG"),
        (encoded(".jpg", 48, 32, 2, 1), "JPEG"),  # IMWRITE_JPEG_PROGRESSIVE: an SOF2 frame
        (encoded(".bmp", 48, 32), "BMP"),
        (encoded(".webp", 48, 32, 64, 80), "WebP"),  # lossy: a VP8 chunk
        (encoded(".webp", 48, 32, 64, 101), "WebP"),  # lossless: a VP8L chunk
        (encoded(".tif", 48, 32), "TIFF"),
    ],
    ids=["png", "png-grey", "jpeg", "jpeg-progressive", "bmp", "webp-lossy", "webp-lossless", "tiff"],
)
def test_files_opencv_writes_read_their_true_size(data: bytes, fmt: str) -> None:
    assert sniff(data) == ImageHeader(fmt, 48, 32)
    assert truncation(data, sniff(data)) is None


@pytest.mark.parametrize(
    ("mode", "fmt", "options", "expected"),
    [
        ("RGBA", "WEBP", {}, "WebP"),  # alpha: a VP8X chunk with the canvas size
        ("L", "BMP", {}, "BMP"),  # an 8-bit palette
        ("RGB", "TIFF", {"compression": "tiff_deflate"}, "TIFF"),
        ("I;16", "PNG", {}, "PNG"),
        ("CMYK", "JPEG", {}, "JPEG"),
    ],
)
def test_files_pillow_writes_read_their_true_size(
    mode: str, fmt: str, options: dict[str, object], expected: str
) -> None:
    data = _pillow(mode, fmt, **options)
    assert sniff(data) == ImageHeader(expected, 40, 24)
    assert truncation(data, sniff(data)) is None


def test_a_top_down_bmp_has_a_positive_height() -> None:
    data = bytearray(encoded(".bmp", 48, 32))
    data[22:26] = struct.pack("<i", -32)
    assert sniff(bytes(data)) == ImageHeader("BMP", 48, 32)


def test_an_os2_core_header_bmp_is_read() -> None:
    rows = bytes(4 * 3 * 2)  # 3x2 pixels of 24 bits: 9 bytes a row, padded to 12
    data = b"BM" + struct.pack("<IHHI", 26 + len(rows), 0, 0, 26) + struct.pack("<IHHHH", 12, 3, 2, 1, 24) + rows
    assert sniff(data) == ImageHeader("BMP", 3, 2)
    assert truncation(data, sniff(data)) is None
    assert truncation(data[:-1], sniff(data)) == "truncated BMP (49 of 50 bytes)"


def test_big_endian_and_big_tiffs_are_read() -> None:
    assert sniff(tiff(5000, 3000, order=">")) == ImageHeader("TIFF", 5000, 3000)
    assert sniff(_bigtiff(70000, 2)) == ImageHeader("TIFF", 70000, 2)


def test_tiff_values_stored_after_the_directory_are_read() -> None:
    # Three BitsPerSample values (6 bytes) do not fit the 4-byte field: it holds their offset instead
    head = tiff(64, 64, extra={258: (3, 3, bytes(4))})
    data = tiff(64, 64, extra={258: (3, 3, struct.pack("<I", len(head)))}) + struct.pack("<HHH", 8, 8, 8)
    assert sniff(data) == ImageHeader("TIFF", 64, 64)
    wide = tiff(64, 64, extra={258: (3, 3, struct.pack("<I", len(head)))}) + struct.pack("<HHH", 8, 32, 8)
    with pytest.raises(BadHeader, match=r"3 samples of 32 bits \(at most 4 of 16\)"):
        sniff(wide)


def test_a_tiled_tiff_reports_its_tile_size() -> None:
    data = tiff(64, 64, extra={322: (4, 1, struct.pack("<I", 8192)), 323: (3, 1, struct.pack("<HH", 16384, 0))})
    assert sniff(data) == ImageHeader("TIFF", 64, 64, tile=(8192, 16384))


# --- the size comes from the header, whatever the body would inflate to ----------------------------------------------


def test_a_tiny_png_claiming_60000_squared_is_read_as_3_6_gigapixels() -> None:
    data = png(60000, 60000, b"\x78\x9c\x03\x00\x00\x00\x00\x01")
    assert len(data) < 80
    assert sniff(data).pixels == 3_600_000_000


def test_a_decompression_bomb_is_measured_without_inflating_it() -> None:
    data = png_bomb(12000, 12000)
    assert len(data) < 200_000
    assert sniff(data) == ImageHeader("PNG", 12000, 12000)


def test_the_content_decides_not_a_name() -> None:
    # there is no name at all here: a PNG is a PNG, and a text file is not an image
    assert sniff(encoded(".png")).format == "PNG"
    with pytest.raises(NotAnImage, match=r"^not an image \(the content is not PNG, JPEG, BMP, WebP or TIFF\)$"):
        sniff(b"just some notes\n")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not an image (an empty file)"),
        (b"\x00" * 100, "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)"),
        (b"GIF89a" + bytes(20), "GIF is not accepted (only PNG, JPEG, BMP, WebP or TIFF)"),
        (b"%PDF-1.7\n", "PDF is not accepted (only PNG, JPEG, BMP, WebP or TIFF)"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)"),
        (b"\x89PNG", "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)"),  # half a signature
    ],
    ids=["empty", "zeros", "gif", "pdf", "riff-wave", "half-png-signature"],
)
def test_content_with_no_accepted_signature_is_not_an_image(data: bytes, reason: str) -> None:
    with pytest.raises(NotAnImage) as caught:
        sniff(data)
    assert str(caught.value) == reason


# --- hostile headers: one clear reason each, never an exception of another type ---------------------------------------

IHDR = struct.pack(">IIBBBBB", 10, 10, 8, 0, 0, 0, 0)
SOF = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 20, 30, 1) + b"\x01\x11\x00"
SOS = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
WEBP = b"RIFF" + struct.pack("<I", 30) + b"WEBP"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            PNG_SIGNATURE + chunk(b"IHDR", IHDR)[:20],
            "unreadable PNG header: the file ends before byte 33, inside the header",
        ),
        (PNG_SIGNATURE + chunk(b"gAMA", bytes(13)), "unreadable PNG header: the first chunk is not a 13-byte IHDR"),
        (
            PNG_SIGNATURE + chunk(b"IHDR", IHDR)[:-1] + b"\x00",
            "unreadable PNG header: the IHDR checksum does not match",
        ),
        (png(0, 10), "unreadable PNG header: it declares an empty image (0x10)"),
        (b"\xff\xd8\xff", "unreadable JPEG header: only 0xFF fill bytes from byte 2, no marker"),
        (b"\xff\xd8" + SOS, "unreadable JPEG header: image data before any frame header"),
        (b"\xff\xd8\xff\xd9", "unreadable JPEG header: marker FFD9 before the image data"),
        (b"\xff\xd8\xff\xe0\x00\x01", "unreadable JPEG header: a segment of length 1 at byte 4"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "unreadable JPEG header: the file ends before byte 21, inside the header"),
        (b"\xff\xd8\xff\xe0\x00\x04ab  ", "unreadable JPEG header: no marker at byte 8"),
        (b"\xff\xd8" + b"\xff" * 100 + SOF, "unreadable JPEG header: only 0xFF fill bytes from byte 2, no marker"),
        (
            b"\xff\xd8" + b"\xff\xfe\x00\x02" * 1001,
            "unreadable JPEG header: more than 1000 segments before the image data",
        ),
        (b"\xff\xd8" + SOF[:2] + b"\x00\x05\x08\x00\x00", "unreadable JPEG header: a 3-byte frame header"),
        (
            b"\xff\xd8" + SOF.replace(b"\x00\x14", b"\x00\x00"),
            "unreadable JPEG header: the height is left to a DNL marker (not supported)",
        ),
        (
            b"\xff\xd8" + SOF.replace(b"\x00\x1e", b"\x00\x00"),
            "unreadable JPEG header: it declares an empty image (0x20)",
        ),
        (
            b"BM" + bytes(12) + struct.pack("<I", 20) + bytes(20),
            "unreadable BMP header: an unknown 20-byte info header",
        ),
        (b"BM" + bytes(12) + struct.pack("<IiiHH", 40, 5, 5, 1, 7), "unreadable BMP header: 7 bits per pixel"),
        (
            b"BM" + bytes(12) + struct.pack("<IiiHH", 40, -5, 5, 1, 24),
            "unreadable BMP header: it declares an empty image (-5x5)",
        ),
        (
            b"BM" + bytes(12) + struct.pack("<I", 40),
            "unreadable BMP header: the file ends before byte 30, inside the header",
        ),
        (WEBP + b"VP8Z" + bytes(14), "unreadable WebP header: an unknown first chunk b'VP8Z'"),
        (WEBP + b"VP8L" + bytes(14), "unreadable WebP header: no VP8L signature"),
        (
            WEBP + b"VP8 " + bytes(4) + b"\x01\x00\x00\x9d\x01\x2a" + bytes(4),
            "unreadable WebP header: no VP8 key frame",
        ),
        (
            WEBP + b"VP8 " + bytes(4) + b"\x00\x00\x00\x9d\x01\x2a" + bytes(4),
            "unreadable WebP header: it declares an empty image (0x0)",
        ),
        (WEBP + b"VP8X", "unreadable WebP header: the file ends before byte 30, inside the header"),
        (tiff(0, 10), "unreadable TIFF header: it declares an empty image (0x10)"),
        (tiff(10, 10)[:14], "unreadable TIFF header: the file ends before byte 16, inside the header"),
        (
            b"II*\x00" + struct.pack("<I", 10**9) + bytes(8),
            "unreadable TIFF header: the file ends before byte 1000000002, inside the header",
        ),
        (b"II*\x00" + struct.pack("<IH", 8, 0) + bytes(6), "unreadable TIFF header: 0 directory entries"),
        (b"II*\x00" + struct.pack("<IH", 8, 60000) + bytes(6), "unreadable TIFF header: 60000 directory entries"),
        (
            tiff(10, 10, extra={256: (2, 1, b"abc\x00")}),
            "unreadable TIFF header: its width tag has type 2 and 1 values",
        ),
        (
            tiff(10, 10, extra={257: (4, 99, bytes(4))}),
            "unreadable TIFF header: its height tag has type 4 and 99 values",
        ),
        (
            tiff(10, 10, extra={277: (3, 1, struct.pack("<HH", 5, 0))}),
            "unreadable TIFF header: 5 samples of 8 bits (at most 4 of 16)",
        ),
        (
            tiff(10, 10, extra={258: (3, 1, struct.pack("<HH", 64, 0))}),
            "unreadable TIFF header: 3 samples of 64 bits (at most 4 of 16)",
        ),
        (
            tiff(10, 10, extra={322: (4, 1, bytes(4)), 323: (4, 1, bytes(4))}),
            "unreadable TIFF header: empty tiles (0x0)",
        ),
        (
            tiff(10, 10, extra={258: (3, 3, struct.pack("<I", 10**6))}),
            "unreadable TIFF header: the file ends before byte 1000006, inside the header",
        ),
    ],
)
def test_a_hostile_header_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadHeader) as caught:
        sniff(data)
    assert str(caught.value) == reason


def test_a_tiff_without_a_size_is_refused() -> None:
    no_height = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 256, 4, 1, 10) + bytes(4)
    with pytest.raises(BadHeader, match="the first image has no width or height"):
        sniff(no_height)


def test_the_header_is_read_from_the_start_of_the_stream_wherever_it_stands() -> None:
    from tasks.image_header import read_header

    stream = io.BytesIO(encoded(".png", 7, 5))
    stream.seek(30)
    assert read_header(stream) == ImageHeader("PNG", 7, 5)


# --- bodies cut short ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "reason"),
    [
        (".jpg", "truncated JPEG (no end-of-image marker)"),
        (".png", "truncated PNG (no IEND chunk)"),
        (".webp", "truncated WebP ("),
        (".bmp", "truncated BMP ("),
    ],
)
def test_a_body_cut_in_half_is_truncated(ext: str, reason: str) -> None:
    data = encoded(ext, 64, 64)
    cut = data[: len(data) // 2]
    assert (truncation(cut, sniff(cut)) or "").startswith(reason)


def test_a_jpeg_cut_before_its_scan_is_truncated() -> None:
    data = encoded(".jpg")
    start = data.index(b"\xff\xda")
    assert truncation(data[:start], sniff(data)) == "truncated JPEG (it ends before its image data)"
    assert truncation(data[: start + 4], sniff(data)) == "truncated JPEG (no end-of-image marker)"


def test_bytes_after_the_end_marker_do_not_make_a_jpeg_truncated() -> None:
    data = encoded(".jpg") + b"camera maker trailer"
    assert truncation(data, sniff(data)) is None


def test_a_run_length_bmp_and_a_tiff_are_left_to_their_decoders() -> None:
    rle = bytearray(encoded(".bmp", 8, 8, channels=1))
    rle[30:34] = struct.pack("<I", 1)  # BI_RLE8: its length is not known from the header
    assert truncation(bytes(rle[:60]), sniff(bytes(rle))) is None
    assert truncation(tiff(10, 10), sniff(tiff(10, 10))) is None
