"""Decoding untrusted bytes: sniffing, caps, orientation, reduced-scale JPEG decoding.

The format is decided by the file's own first bytes, never by a Content-Type, and
Pillow is then allowed that one plugin only. The pixel count declared in the header is
checked against ``IMAGE_MAX_PIXELS`` before a single pixel is decoded. Pillow raises
many exception types on hostile files (``OSError``, ``SyntaxError``, ``ValueError``,
``struct.error``, ``EOFError``, its own bomb error...): everything it raises here is a
``FILE_4004``, never retried.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import pillow_heif
from PIL import Image, ImageCms, UnidentifiedImageError

from middleware.errors import FILE_4004, JobError

SourceFormat = Literal["jpeg", "png", "gif", "webp", "avif", "heif"]
Size = tuple[int, int]

_PIL_NAME: Final[dict[SourceFormat, str]] = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "avif": "AVIF",
    "heif": "HEIF",
}
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
# EXIF orientation -> the transpose that makes the image upright.
_UPRIGHT: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_SIDES: Final = frozenset(
    {
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_270,
    }
)
_ORIENTATION_TAG: Final = 0x0112
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

pillow_heif.register_heif_opener()


@dataclass(frozen=True)
class Decoded:
    """An RGB or RGBA image as stored, possibly decoded at a reduced scale.

    ``upright`` is the transpose that makes it upright (EXIF orientation), None when it
    is upright already: the pipeline applies it after its first resize, on fewer pixels.
    ``size`` is the full-resolution upright size: geometry is planned against it.
    ``icc_profile`` is the source's RGB colour profile, None when untagged (sRGB assumed).
    """

    image: Image.Image
    size: Size
    source_format: SourceFormat
    icc_profile: bytes | None
    upright: Image.Transpose | None = None


def escalate_bomb_warnings() -> None:
    """Make Pillow's DecompressionBombWarning an error in this process (idempotent).

    Pillow only warns between its own threshold and twice that; a warning is not a
    refusal, so workers turn it into an exception, which :func:`decode` reports as
    ``FILE_4004``. Installed once at wiring time: ``catch_warnings`` is not thread-safe.
    """
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def sniff(data: bytes) -> SourceFormat:
    """The format the bytes themselves declare; anything else is ``FILE_4004``."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
    raise JobError(FILE_4004, "not a supported image (JPEG, PNG, GIF, WebP, AVIF or HEIC/HEIF expected)")


def decode(data: bytes, max_pixels: int, needed: Callable[[Size], Size | None] | None = None) -> Decoded:
    """Decode ``data`` into an RGB/RGBA image and the transpose that makes it upright.

    Parameters:
      max_pixels: the cap on width x height declared by the file (``IMAGE_MAX_PIXELS``).
      needed: given the full upright size, the smallest size the outputs need, or None
        for full resolution; JPEGs are then decoded at 1/2, 1/4 or 1/8 scale via draft().

    Raises:
      JobError: ``FILE_4004`` for anything unsupported, hostile, truncated or too large.
    """
    fmt = sniff(data)
    try:
        return _decode(data, fmt, max_pixels, needed)
    except JobError:
        raise
    except Exception as exc:  # Pillow's exception types on hostile input are open-ended
        raise JobError(FILE_4004, f"{fmt} image could not be decoded: {_reason(exc)}") from None


def _decode(
    data: bytes, fmt: SourceFormat, max_pixels: int, needed: Callable[[Size], Size | None] | None
) -> Decoded:
    # The first frame of an animation (GIF, APNG, animated WebP/AVIF) is what opening gives.
    image: Image.Image = Image.open(io.BytesIO(data), formats=[_PIL_NAME[fmt]])
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise JobError(
            FILE_4004,
            f"image of {width}x{height} pixels exceeds the {max_pixels}-pixel cap (IMAGE_MAX_PIXELS)",
        )
    # Read before draft()/load(): getexif() on a JPEG parses the header only.
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    transpose = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    swapped = transpose in SWAPS_SIDES
    upright: Size = (height, width) if swapped else (width, height)
    if fmt == "jpeg" and needed is not None:
        target = needed(upright)
        if target is not None:
            image.draft(None, (target[1], target[0]) if swapped else target)
    image.load()
    icc = image.info.get("icc_profile")
    icc = icc if isinstance(icc, bytes) and len(icc) > 20 else None
    image = _normalise_mode(image, icc)
    image.info = {}  # metadata (EXIF with GPS, XMP, comments) stops here
    # Only an RGB profile still describes the pixels (a CMYK one was applied, a grey one is moot).
    profile = icc if icc is not None and icc[16:20] == b"RGB " else None
    return Decoded(image, upright, fmt, profile, transpose)


def _normalise_mode(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB, or RGBA when the image has any transparency; CMYK through its profile when it has one."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode == "CMYK":
        return _cmyk_to_rgb(image, icc)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greyscale: scale to 8 bits (a plain convert would clip everything above 255).
        image = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    transparent = mode in ("PA", "LA", "La", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if transparent else "RGB")


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    if icc is not None and icc[16:20] == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: fall back to the device-independent formula
        else:
            if converted is not None:
                return converted
    return image.convert("RGB")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable file of that format"
    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
