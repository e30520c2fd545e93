"""Turning a request's `image` field into a PIL image, with the service's limits and remote policy.

By default only inline images are accepted (a data URL or bare base64), so a client can never make
the server read its own files or fetch URLs; `allow_remote_images` opens http(s) URLs, cloud URIs
and server-side paths.
"""
from __future__ import annotations

from PIL import Image

from carevl.config.stages import ServeLimits
from carevl.data.images import (
    IMAGE_REMOTE_NOT_ALLOWED,
    IMAGE_TOO_LARGE_BYTES,
    IMAGE_TOO_MANY_PIXELS,
    ImageError,
    decode_data_url,
    load_image,
)

# Reasons that mean "too big" (HTTP 413); every other image failure is the client's bad input (400).
OVERSIZE_REASONS = frozenset({IMAGE_TOO_LARGE_BYTES, IMAGE_TOO_MANY_PIXELS})


def image_error_status(error: ImageError) -> int:
    """HTTP status for an image failure: 413 when over a size limit, else 400."""
    return 413 if error.reason in OVERSIZE_REASONS else 400


def decode_request_image(image: str | None, limits: ServeLimits, allow_remote: bool,
                         timeout_s: float = 10.0) -> Image.Image | None:
    """The request's image as RGB, None when the request has no image; raises ImageError."""
    if image is None or not image.strip():
        return None
    ref = image.strip()
    image_limits = limits.image_limits()
    if allow_remote or ref[:5].lower() == "data:":
        return load_image(ref, None, image_limits, allow_remote=allow_remote, timeout_s=timeout_s)
    if "://" in ref[:32]:
        raise ImageError(IMAGE_REMOTE_NOT_ALLOWED, "this server accepts only data URLs or base64 images")
    # Bare base64 only, decoded as the payload of a data URL, so a string that happens to name a
    # server-side file is never read.
    return load_image(None, decode_data_url("data:;base64," + ref, image_limits)[1], image_limits)
