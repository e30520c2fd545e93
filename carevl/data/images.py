"""Loading item images from any reference the item schema allows, with limits checked before decoding.

An image arrives as raw bytes or as a string: a local path, a `file://` URI, a data URL, a bare base64
string, an http(s) URL or a cloud URI (`s3://`, `gs://`, ...). Remote sources are fetched only when the
caller allows it. Every failure is an `ImageError` whose `reason` is a short code that batch jobs write
into their quarantine rows.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import urllib.parse
import warnings

import httpx
import pyarrow.fs as pafs
from PIL import Image, ImageOps, UnidentifiedImageError

from carevl.config.stages import InputLimits
from carevl.errors import ReasonError
from carevl.http_retry import RetryableStatus, check_status, retrying

FETCH_RETRIES, FETCH_BACKOFF_S = 2, 0.5  # an image URL: a couple of quick retries, then quarantine

# Reason codes (stable: quarantine rows and summaries count them).
IMAGE_MISSING = "image_missing"
IMAGE_AMBIGUOUS = "image_ambiguous"
IMAGE_NOT_FOUND = "image_not_found"
IMAGE_REMOTE_NOT_ALLOWED = "image_remote_not_allowed"
IMAGE_FETCH_FAILED = "image_fetch_failed"
IMAGE_TOO_LARGE_BYTES = "image_too_large_bytes"
IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
IMAGE_UNDECODABLE = "image_undecodable"
REASONS = (IMAGE_MISSING, IMAGE_AMBIGUOUS, IMAGE_NOT_FOUND, IMAGE_REMOTE_NOT_ALLOWED, IMAGE_FETCH_FAILED,
           IMAGE_TOO_LARGE_BYTES, IMAGE_TOO_MANY_PIXELS, IMAGE_UNDECODABLE)

_BASE64_RE = re.compile(r"^[A-Za-z0-9+/_\-\s]+={0,2}\s*$")
# The smallest useful encoded image is far longer than a file name; shorter strings are paths.
_MIN_BASE64_CHARS = 64
_MIME_BY_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                  (b"GIF8", "image/gif"), (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"),
                  (b"MM\x00*", "image/tiff"))


class ImageError(ReasonError):
    """An image that cannot be used; `reason` is one of REASONS, the message is for people."""


def _short(text: str, limit: int = 200) -> str:
    """A reference cut to a readable length for messages (a bad base64 blob can be megabytes)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _check_byte_count(n: int, limits: InputLimits, what: str) -> None:
    if n > limits.max_image_bytes:
        raise ImageError(IMAGE_TOO_LARGE_BYTES, f"{what} has {n} bytes, limit {limits.max_image_bytes}")


def _b64decode(text: str, what: str) -> bytes:
    compact = "".join(text.split())
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(IMAGE_UNDECODABLE, f"{what} is not valid base64") from None


def decode_data_url(url: str, limits: InputLimits | None = None) -> tuple[str, bytes]:
    """(media type, payload bytes) of a `data:` URL; the size limit is checked before decoding."""
    header, sep, payload = url.partition(",")
    if not url.startswith("data:") or not sep:
        raise ImageError(IMAGE_UNDECODABLE, "malformed data URL (expected 'data:<type>;base64,<data>')")
    params = header[len("data:"):].split(";")
    mime = params[0] or "text/plain"
    if "base64" in params[1:]:
        if limits is not None:
            _check_byte_count(len(payload) * 3 // 4, limits, "data URL payload")
        return mime, _b64decode(payload, "data URL payload")
    data = urllib.parse.unquote_to_bytes(payload)
    if limits is not None:
        _check_byte_count(len(data), limits, "data URL payload")
    return mime, data


def _looks_like_base64(text: str) -> bool:
    return len(text) >= _MIN_BASE64_CHARS and _BASE64_RE.match(text) is not None


def _read_local(path: str, limits: InputLimits) -> bytes:
    try:
        size = os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(IMAGE_NOT_FOUND, f"no such file: {_short(path)}") from None
    except OSError as exc:  # e.g. a name too long to be a path
        raise ImageError(IMAGE_NOT_FOUND, f"cannot stat {_short(path)}: {exc.strerror}") from None
    if not os.path.isfile(path):
        raise ImageError(IMAGE_NOT_FOUND, f"not a file: {_short(path)}")
    _check_byte_count(size, limits, path)
    with open(path, "rb") as handle:
        return handle.read()


def _read_uri(uri: str, limits: InputLimits) -> bytes:
    """A cloud (or file://) URI through pyarrow filesystems."""
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
    except (OSError, ValueError) as exc:  # unknown scheme, missing credentials, ...
        raise ImageError(IMAGE_FETCH_FAILED, f"cannot open {uri}: {exc}") from None
    if info.type != pafs.FileType.File:
        raise ImageError(IMAGE_NOT_FOUND, f"no such object: {uri}")
    _check_byte_count(info.size, limits, uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except OSError as exc:
        raise ImageError(IMAGE_FETCH_FAILED, f"cannot read {uri}: {exc}") from None


def _read_http(url: str, limits: InputLimits, timeout_s: float) -> bytes:
    """Fetch an http(s) URL, stopping as soon as the body exceeds the byte limit; transient failures
    are retried under the one HTTP retry policy (`carevl.http_retry`)."""
    try:
        for attempt in retrying(FETCH_RETRIES, FETCH_BACKOFF_S):
            with attempt:
                return _fetch_once(url, limits, timeout_s)
    except RetryableStatus as exc:
        raise ImageError(IMAGE_FETCH_FAILED, f"{exc} for {url}") from None
    except httpx.HTTPError as exc:
        raise ImageError(IMAGE_FETCH_FAILED, f"cannot fetch {url}: {type(exc).__name__}") from None
    raise AssertionError("unreachable")


def _fetch_once(url: str, limits: InputLimits, timeout_s: float) -> bytes:
    with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
        check_status(response)
        if response.status_code in (404, 410):
            raise ImageError(IMAGE_NOT_FOUND, f"HTTP {response.status_code} for {url}")
        if response.status_code >= 400:
            raise ImageError(IMAGE_FETCH_FAILED, f"HTTP {response.status_code} for {url}")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit():
            _check_byte_count(int(declared), limits, url)
        chunks, total = [], 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            _check_byte_count(total, limits, url)
            chunks.append(chunk)
        return b"".join(chunks)


def read_image_bytes(image_path: str | None, image_bytes: bytes | None, limits: InputLimits,
                     allow_remote: bool = False, timeout_s: float = 30.0) -> bytes:
    """The encoded image bytes behind an item's image reference, size-checked, not yet decoded."""
    if image_bytes is not None and not isinstance(image_bytes, (bytes, bytearray, memoryview)):
        raise ImageError(IMAGE_UNDECODABLE, f"image_bytes must be bytes, got {type(image_bytes).__name__}")
    has_bytes = image_bytes is not None and len(image_bytes) > 0
    has_path = isinstance(image_path, str) and image_path.strip() != ""
    if has_bytes and has_path:
        raise ImageError(IMAGE_AMBIGUOUS, "both image_path and image_bytes are set; keep one")
    if has_bytes:
        _check_byte_count(len(image_bytes), limits, "image_bytes")
        return bytes(image_bytes)
    if not has_path:
        if image_path is not None and not isinstance(image_path, str):
            raise ImageError(IMAGE_MISSING, f"image_path must be a string, got {type(image_path).__name__}")
        raise ImageError(IMAGE_MISSING, "the item has neither image_path nor image_bytes")
    ref = image_path.strip()
    lower = ref[:16].lower()
    if lower.startswith("data:"):
        return decode_data_url(ref, limits)[1]
    if lower.startswith(("http://", "https://")):
        if not allow_remote:
            raise ImageError(IMAGE_REMOTE_NOT_ALLOWED, f"remote images are disabled: {_short(ref)}")
        return _read_http(ref, limits, timeout_s)
    if lower.startswith("file://"):
        return _read_uri(ref, limits)
    if "://" in ref[:32]:
        if not allow_remote:
            raise ImageError(IMAGE_REMOTE_NOT_ALLOWED, f"remote images are disabled: {_short(ref)}")
        return _read_uri(ref, limits)
    if not os.path.exists(os.path.expanduser(ref)) and _looks_like_base64(ref):
        _check_byte_count(len(ref) * 3 // 4, limits, "base64 image")
        if "/" not in ref:
            return _b64decode(ref, "base64 image")
        # '/' is both a base64 letter and a path separator: call it base64 only if it decodes to an image.
        try:
            data = _b64decode(ref, "base64 image")
        except ImageError:
            data = b""
        if _known_image_magic(data):
            return data
    return _read_local(os.path.expanduser(ref), limits)


def decode_image(data: bytes, limits: InputLimits) -> Image.Image:
    """Decode encoded bytes to an RGB image. The pixel count is read from the header and checked before
    any pixel data is decompressed, so a decompression bomb is refused cheaply."""
    _check_byte_count(len(data), limits, "image")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (below) replaces PIL's global one.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise ImageError(IMAGE_TOO_MANY_PIXELS,
                                 f"{width}x{height} = {width * height} pixels, limit {limits.max_image_pixels}")
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(IMAGE_TOO_MANY_PIXELS, str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(IMAGE_UNDECODABLE, f"cannot decode image: {exc}") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF rotation applied, transparency flattened onto white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(image_path: str | None, image_bytes: bytes | None, limits: InputLimits,
               allow_remote: bool = False, timeout_s: float = 30.0) -> Image.Image:
    """The item's image as an RGB PIL image, or ImageError(reason) saying why not.

    Exactly one of `image_path` / `image_bytes` must be set. `image_path` may be a local path, a
    `file://` URI, a data URL or a bare base64 string; http(s) URLs and cloud URIs are fetched only
    with `allow_remote=True`. Byte and pixel limits come from `limits`.
    """
    data = read_image_bytes(image_path, image_bytes, limits, allow_remote, timeout_s)
    return decode_image(data, limits)


def image_key(image_path: str | None, image_bytes: bytes | None) -> str:
    """A stable hex key that is equal for the same image, so each unique image is captioned once.

    Inline content (bytes, data URLs) is keyed by a hash of the bytes, so the same picture sent as
    bytes or as a data URL gets one key. References (paths, URLs) are keyed by the reference text;
    nothing is read from disk or network.
    """
    if image_bytes is not None and len(image_bytes) > 0:
        return hashlib.sha256(b"bytes\0" + bytes(image_bytes)).hexdigest()
    if isinstance(image_path, str) and image_path.strip():
        ref = image_path.strip()
        if ref[:5].lower() == "data:":
            try:
                return hashlib.sha256(b"bytes\0" + decode_data_url(ref)[1]).hexdigest()
            except ImageError:
                pass  # an undecodable data URL still gets a stable key; loading it will fail later
        return hashlib.sha256(b"ref\0" + ref.encode("utf-8")).hexdigest()
    raise ImageError(IMAGE_MISSING, "the item has neither image_path nor image_bytes")


def _known_image_magic(data: bytes) -> bool:
    return any(data.startswith(magic) for magic, _ in _MIME_BY_MAGIC) or data[8:12] == b"WEBP"


def sniff_mime(data: bytes) -> str:
    """The media type of encoded image bytes from their magic number (PNG when unknown)."""
    for magic, mime in _MIME_BY_MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of a PIL image (deterministic for the same pixels and PIL version)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_data_url(image: Image.Image | bytes) -> str:
    """A `data:<type>;base64,...` URL for a PIL image (encoded as PNG) or already-encoded bytes."""
    data = image if isinstance(image, (bytes, bytearray)) else encode_png(image)
    return f"data:{sniff_mime(bytes(data))};base64,{base64.b64encode(bytes(data)).decode('ascii')}"
