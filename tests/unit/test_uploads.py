"""tasks/uploads.py: what the detect API accepts, decided from the bytes before any decode. Honest images come from
OpenCV and Pillow; every hostile one is built byte by byte, and each refusal is checked for its status and reason."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
from PIL import Image

from tasks.errors import UploadRejected
from tasks.image_header import ImageHeader
from tasks.uploads import check_upload, trailing
from tests.images import PNG_SIGNATURE, chunk, encoded, png, png_bomb, tiff

pytestmark = pytest.mark.unit

MIB = 1 << 20
MPX = 1_000_000
LIMITS = (20 * MIB, 40 * MPX)


def _pillow(mode: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (40, 24), 90).save(buffer, fmt)
    return buffer.getvalue()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.sh", "#!/bin/sh\necho owned\n")
    return buffer.getvalue()


def _refused(data: bytes, max_bytes: int = LIMITS[0], max_pixels: int = LIMITS[1]) -> tuple[int, str]:
    with pytest.raises(UploadRejected) as caught:
        check_upload(data, max_bytes, max_pixels)
    return caught.value.status, str(caught.value)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (encoded(".jpg", 48, 32), "JPEG"),
        (encoded(".jpg", 48, 32, 2, 1), "JPEG"),  # progressive: several scans before the end
        (encoded(".png", 48, 32), "PNG"),
        (encoded(".webp", 48, 32, 64, 80), "WebP"),  # lossy
        (encoded(".webp", 48, 32, 64, 101), "WebP"),  # lossless
        (encoded(".bmp", 48, 32), "BMP"),
    ],
    ids=["jpeg", "jpeg-progressive", "png", "webp-lossy", "webp-lossless", "bmp"],
)
def test_honest_images_pass_with_their_header(data: bytes, fmt: str) -> None:
    assert check_upload(data, *LIMITS) == ImageHeader(fmt, 48, 32)


@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "WEBP"), ("L", "BMP"), ("CMYK", "JPEG"), ("P", "PNG")])
def test_what_pillow_writes_passes(mode: str, fmt: str) -> None:
    assert check_upload(_pillow(mode, fmt), *LIMITS).pixels == 40 * 24


def test_a_jpeg_with_a_few_padding_bytes_after_its_end_passes() -> None:
    assert check_upload(encoded(".jpg") + b"\x00\x00\r\n", *LIMITS).format == "JPEG"


def test_an_empty_upload_is_a_bad_request() -> None:
    status, reason = _refused(b"")
    assert status == 400 and reason.startswith("empty upload")


def test_an_upload_over_the_byte_cap_is_too_large_before_its_content_is_read() -> None:
    data = encoded(".png", 64, 64)
    assert _refused(data, max_bytes=len(data) - 1) == (413, f"upload of {len(data)} bytes is over the "
                                                              f"{len(data) - 1}-byte limit")  # fmt: skip
    assert check_upload(data, len(data), LIMITS[1]).format == "PNG"  # exactly at the cap is fine


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encoded(".tif", 48, 32), "TIFF is not accepted"),
        (tiff(10, 10), "TIFF is not accepted"),
        (b"GIF89a" + bytes(20), "GIF is not accepted"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF is not accepted"),
        (b"<html><body>hi</body></html>", "not an image"),
        (_zip(), "not an image"),
        (b'{"uri": "s3://b/k"}', "not an image"),
    ],
    ids=["tiff", "tiff-header", "gif", "pdf", "html", "zip", "json"],
)
def test_anything_but_the_four_formats_is_unsupported_by_its_magic_bytes(data: bytes, reason: str) -> None:
    assert _refused(data) == (415, f"unsupported upload: {reason} (only JPEG, PNG, WebP or BMP)")


def test_a_header_that_starts_right_but_cannot_be_read_is_unprocessable() -> None:
    bad_crc = PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))[:-1] + b"\x00"
    assert _refused(bad_crc + bytes(20)) == (422, "not a readable image: unreadable PNG header: the IHDR checksum "
                                                  "does not match")  # fmt: skip


def test_a_decompression_bomb_is_refused_by_its_declared_pixels() -> None:
    bomb = png_bomb(12000, 12000)  # 144 Mpx in ~0.1 MB: well under the byte cap
    assert len(bomb) < 200_000
    assert _refused(bomb) == (413, "image of 12000x12000 (144.0 Mpx) is over the 40 Mpx limit")
    claim = png(60000, 60000, b"\x78\x9c\x03\x00\x00\x00\x00\x01")  # 80 bytes claiming 3.6 Gpx
    assert _refused(claim)[0] == 413
    assert check_upload(encoded(".png", 100, 100), LIMITS[0], 100 * 100).pixels == 10_000  # at the cap is fine


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_a_truncated_image_is_unprocessable(ext: str) -> None:
    data = encoded(ext, 64, 64)
    status, reason = _refused(data[: len(data) // 2])
    assert status == 422 and reason.startswith("not a whole image: truncated "), reason


@pytest.mark.parametrize(
    ("ext", "appended", "reason"),
    [
        (".jpg", _zip(), "bytes after the JPEG's end-of-image marker"),
        (".jpg", b"<html><script>alert(1)</script></html>", "bytes after the JPEG's end-of-image marker"),
        (".jpg", b"\x00" * 17, "17 bytes after the JPEG's end-of-image marker"),  # more than padding
        (".png", _zip(), "bytes after the PNG's IEND chunk"),
        (".png", b"<html></html>", "13 bytes after the PNG's IEND chunk"),
        (".webp", b"<html></html>", "bytes where the WebP header declares"),
        (".bmp", _zip(), "bytes where the BMP header declares"),
    ],
    ids=["jpeg-zip", "jpeg-html", "jpeg-zeros", "png-zip", "png-html", "webp-html", "bmp-zip"],
)
def test_a_polyglot_is_unprocessable(ext: str, appended: bytes, reason: str) -> None:
    status, found = _refused(encoded(ext, 64, 64) + appended)
    assert status == 422 and found.startswith("not a plain image: ") and reason in found, found


def test_a_png_whose_iend_hides_inside_an_earlier_chunk_is_a_polyglot() -> None:
    honest = encoded(".png", 16, 16)
    smuggled = honest[:33] + chunk(b"tEXt", b"k\x00" + b"\x00\x00\x00\x00IEND\xaeB`\x82") + honest[33:]
    status, reason = _refused(smuggled)
    assert status == 422 and "after the PNG's IEND chunk" in reason


def test_a_png_cut_inside_its_iend_crc_is_not_whole() -> None:
    data = encoded(".png", 16, 16)[:-2]
    assert trailing(data, ImageHeader("PNG", 16, 16)) == "the PNG's IEND chunk is cut short"


def test_a_riff_size_shorter_than_the_file_is_a_polyglot() -> None:
    data = bytearray(encoded(".webp", 32, 32, 64, 80))
    data[4:8] = struct.pack("<I", struct.unpack("<I", data[4:8])[0] - 2)
    assert _refused(bytes(data)) == (422, f"not a plain image: {len(data)} bytes where the WebP header declares "
                                          f"{len(data) - 2}")  # fmt: skip
