"""load_image: every source kind, every ImageError reason, and the helpers around it."""
from __future__ import annotations

import base64
import http.server
import io
import random
import struct
import threading
import zlib

import pytest
from PIL import Image

from carevl.config.stages import InputLimits
from carevl.data import images
from carevl.data.images import ImageError, image_key, load_image

LIMITS = InputLimits()


def _png(size=(8, 6), color=(10, 200, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels but whose data is a few bytes (a bomb)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _reason(*args, **kwargs) -> str:
    with pytest.raises(ImageError) as err:
        load_image(*args, **kwargs)
    assert str(err.value).startswith(err.value.reason + ": ")
    return err.value.reason


def test_sources_all_decode_to_the_same_rgb_image(tmp_path):
    data = _png()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    sources = [(None, data), (str(path), None), ("file://" + str(path), None),
               (f"data:image/png;base64,{b64}", None), (b64, None), (None, bytearray(data))]
    for image_path, image_bytes in sources:
        image = load_image(image_path, image_bytes, LIMITS)
        assert image.mode == "RGB" and image.size == (8, 6)
        assert image.getpixel((3, 3)) == (10, 200, 30)


def test_transparency_is_flattened_onto_white():
    image = load_image(None, _png(color=(255, 0, 0, 0), mode="RGBA"), LIMITS)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    assert load_image(None, _png(mode="L", color=7), LIMITS).getpixel((0, 0)) == (7, 7, 7)


def test_missing_and_ambiguous():
    assert _reason(None, None, LIMITS) == "image_missing"
    assert _reason("  ", b"", LIMITS) == "image_missing"
    assert _reason(5, None, LIMITS) == "image_missing"
    assert _reason("a.png", _png(), LIMITS) == "image_ambiguous"
    assert _reason(None, 12345, LIMITS) == "image_undecodable"
    assert _reason(None, "aGVsbG8=", LIMITS) == "image_undecodable"     # text where bytes belong


def test_not_found(tmp_path):
    assert _reason(str(tmp_path / "nope.png"), None, LIMITS) == "image_not_found"
    assert _reason("file://" + str(tmp_path / "nope.png"), None, LIMITS) == "image_not_found"
    assert _reason(str(tmp_path), None, LIMITS) == "image_not_found"
    # Looks like base64 (letters and '/') but decodes to no image: it is a path that does not exist.
    assert _reason("/data/images/" + "a" * 80, None, LIMITS) == "image_not_found"
    with pytest.raises(ImageError) as err:
        load_image("/x/" + "b" * 100_000, None, LIMITS)
    assert len(str(err.value)) < 400          # a huge bad reference does not flood logs


def test_undecodable(tmp_path):
    assert _reason(None, b"definitely not an image", LIMITS) == "image_undecodable"
    noisy = io.BytesIO()
    Image.frombytes("RGB", (32, 32), random.Random(0).randbytes(32 * 32 * 3)).save(noisy, format="PNG")
    assert _reason(None, noisy.getvalue()[:200], LIMITS) == "image_undecodable"   # truncated
    assert _reason("data:image/png;base64,@@@@", None, LIMITS) == "image_undecodable"
    assert _reason("data:image/png;base64", None, LIMITS) == "image_undecodable"  # no comma
    assert _reason("QUJD" * 40, None, LIMITS) == "image_undecodable"            # base64 of text
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    assert _reason(str(bad), None, LIMITS) == "image_undecodable"


def test_too_large_bytes_checked_before_reading(tmp_path):
    small = InputLimits(max_image_bytes=100)
    data = _png((64, 64))
    assert len(data) > 100
    path = tmp_path / "big.png"
    path.write_bytes(data)
    assert _reason(None, data, small) == "image_too_large_bytes"
    assert _reason(str(path), None, small) == "image_too_large_bytes"
    assert _reason(images.encode_data_url(data), None, small) == "image_too_large_bytes"
    assert _reason(base64.b64encode(data).decode(), None, small) == "image_too_large_bytes"


def test_too_many_pixels_and_decompression_bomb():
    assert _reason(None, _png((20, 20)), InputLimits(max_image_pixels=399)) == "image_too_many_pixels"
    assert load_image(None, _png((20, 20)), InputLimits(max_image_pixels=400)).size == (20, 20)
    # Header claims 10^10 pixels; refused from the header alone (beyond PIL's own bomb limit too).
    bomb = _png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    assert _reason(None, bomb, LIMITS) == "image_too_many_pixels"
    assert _reason(None, _png_header_only(7_000, 7_000), LIMITS) == "image_too_many_pixels"


def test_remote_refused_unless_allowed():
    for url in ("http://example.com/a.png", "https://example.com/a.png", "s3://bucket/a.png", "gs://b/a.png"):
        assert _reason(url, None, LIMITS) == "image_remote_not_allowed"
    assert _reason("nosuchscheme://x/a.png", None, LIMITS, allow_remote=True) == "image_fetch_failed"


@pytest.fixture()
def http_server():
    payload = {"/ok.png": _png(), "/big.png": _png((64, 64))}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server naming
            body = payload.get(self.path)
            if body is None:
                self.send_response(404 if self.path != "/boom" else 500)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()          # no Content-Length: the size cap must hold while streaming
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetch(http_server):
    image = load_image(f"{http_server}/ok.png", None, LIMITS, allow_remote=True)
    assert image.size == (8, 6)
    assert _reason(f"{http_server}/missing.png", None, LIMITS, allow_remote=True) == "image_not_found"
    assert _reason(f"{http_server}/boom", None, LIMITS, allow_remote=True) == "image_fetch_failed"
    assert _reason(f"{http_server}/big.png", None, InputLimits(max_image_bytes=100),
                   allow_remote=True) == "image_too_large_bytes"


def test_every_reason_is_covered():
    # Keep this list in step with the tests above when a reason is added.
    covered = {"image_missing", "image_ambiguous", "image_not_found", "image_remote_not_allowed",
               "image_fetch_failed", "image_too_large_bytes", "image_too_many_pixels", "image_undecodable"}
    assert covered == set(images.REASONS)


def test_image_key_and_data_urls():
    data = _png()
    url = images.encode_data_url(data)
    assert url.startswith("data:image/png;base64,")
    assert images.decode_data_url(url) == ("image/png", data)
    assert image_key(None, data) == image_key(url, None) == image_key("", data)
    assert image_key("a.png", None) == image_key(" a.png ", None) != image_key("b.png", None)
    assert image_key(None, data) != image_key(None, _png(color=(0, 0, 0)))
    assert len(image_key("a.png", None)) == 64
    pil_url = images.encode_data_url(Image.open(io.BytesIO(data)))
    assert load_image(pil_url, None, LIMITS).getpixel((0, 0)) == (10, 200, 30)
    with pytest.raises(ImageError):
        image_key(None, None)
