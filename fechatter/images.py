"""Images of uploads (issue 15, SPEC §8): type and size from the bytes, thumbnails.

Blocking functions over a file path, run on a worker thread by the caller (``trio.to_thread``
with a bounded limiter); this module has no I/O of its own beyond reading that file and never
touches the event loop. Pillow does the decoding.

- **Type** comes from the bytes, never the client's claim: PNG, JPEG, GIF and WebP are the
  *safe image types* (shown inline); anything else, an SVG included, is a plain file.
- **Decompression bombs** are refused explicitly: the pixel count in the header is checked
  against ``max_pixels`` before anything is decoded (``ImageTooLarge``). Pillow's own
  process-wide check is switched off in favour of this one: below twice its limit it only
  *warns*, and a warning is not a refusal.
- **Thumbnails**: at most ``THUMBNAIL_SIDE`` px on the long side, EXIF orientation applied,
  written fresh (no EXIF, no GPS, no comments carried over): PNG when the image has
  transparency, else JPEG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Replaced by the explicit check in ``probe`` (see the module docstring).
Image.MAX_IMAGE_PIXELS = None

THUMBNAIL_SIDE = 400
JPEG_QUALITY = 82
SAFE_IMAGE_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
# EXIF orientations 5-8 turn the picture a quarter: width and height swap.
_QUARTER_TURNS = {5, 6, 7, 8}
_ORIENTATION = 0x0112


class ImageTooLarge(Exception):
    """The image's header declares more pixels than allowed (a decompression bomb)."""

    def __init__(self, pixels: int, limit: int) -> None:
        super().__init__(f"the image has {pixels} pixels, more than the {limit} allowed")
        self.pixels = pixels
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the bytes say: MIME type, size as displayed (orientation applied), in pixels;
    the thumbnail's bytes and MIME type."""

    content_type: str
    width: int
    height: int
    thumbnail: bytes
    thumbnail_type: str


def probe(path: Path, max_pixels: int) -> ImageInfo | None:
    """The image in the file at ``path`` with its thumbnail, or None when the bytes are not a
    safe image type that decodes cleanly. Raises ``ImageTooLarge`` (checked before any decode)."""
    try:
        with Image.open(path) as img:
            kind = SAFE_IMAGE_TYPES.get(img.format or "")
            if kind is None:
                return None
            pixels = img.width * img.height
            if pixels > max_pixels:
                raise ImageTooLarge(pixels, max_pixels)
            orientation = img.getexif().get(_ORIENTATION, 1)
            width, height = img.size
            if orientation in _QUARTER_TURNS:
                width, height = height, width
            thumbnail, thumbnail_type = _thumbnail(img)
    except Image.DecompressionBombError as exc:  # should another part of the process set it
        raise ImageTooLarge(0, max_pixels) from exc
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None  # not an image, or a broken one: a plain file
    return ImageInfo(kind, width, height, thumbnail, thumbnail_type)


def _thumbnail(img: Image.Image) -> tuple[bytes, str]:
    """The first frame, turned upright, at most ``THUMBNAIL_SIDE`` px long, re-encoded with
    no metadata."""
    if img.format == "JPEG":
        # Let the JPEG decoder scale by 1/2..1/8 while decoding: far less memory and time.
        img.draft("RGB", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))
    img.seek(0)
    upright = ImageOps.exif_transpose(img)
    upright.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    alpha = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    out = io.BytesIO()
    if alpha:
        upright.convert("RGBA").save(out, "PNG", optimize=True)
        return out.getvalue(), "image/png"
    upright.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue(), "image/jpeg"
