"""Encoding outputs: format and quality choices, sRGB, and no metadata at all.

Outputs never carry EXIF (GPS!), XMP, comments or text chunks: the decoder drops the
source's metadata and :func:`encode` saves from a clean ``info`` with no metadata
arguments. Colours are converted to sRGB from the source's RGB ICC profile (Display P3
on iPhones) and written untagged, which every browser reads as sRGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Final, Literal

from PIL import Image, ImageCms

from .decode import SourceFormat
from .steps import FormatChoice, QualityPreset

OutputFormat = Literal["jpg", "png", "webp", "avif"]

CONTENT_TYPES: Final[dict[OutputFormat, str]] = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
}
# `format: auto`: we do not know the viewer, so one format every current browser and the
# app's image views decode, with alpha, and fast to encode. AVIF is ~15% smaller but
# several times slower to encode.
AUTO_FORMAT: Final[OutputFormat] = "webp"
# Without a format, the source's own format when it is a web format.
DEFAULT_FORMAT: Final[dict[SourceFormat, OutputFormat]] = {
    "jpeg": "jpg",
    "png": "png",
    "webp": "webp",
    "avif": "avif",
    "heif": "jpg",  # HEIC does not display in most browsers
    "gif": "png",  # the first frame, keeping its transparency
}
# `quality: auto` and its variants as fixed settings per lossy encoder (AVIF's scale
# runs lower for the same look). No quality given means "auto".
QUALITY: Final[dict[QualityPreset, dict[OutputFormat, int]]] = {
    "auto:best": {"jpg": 90, "webp": 90, "avif": 75},
    "auto:good": {"jpg": 80, "webp": 80, "avif": 60},
    "auto": {"jpg": 80, "webp": 80, "avif": 60},
    "auto:eco": {"jpg": 70, "webp": 70, "avif": 50},
    "auto:low": {"jpg": 60, "webp": 60, "avif": 40},
}
JPEG_FLATTEN_ONTO: Final = (255, 255, 255)
AVIF_SPEED: Final = 6  # libavif's 0 (slowest) .. 10 (fastest); 6 is Pillow's default
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class Encoded:
    data: bytes
    format: OutputFormat
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def choose_format(asked: FormatChoice | None, source: SourceFormat) -> OutputFormat:
    if asked is None:
        return DEFAULT_FORMAT[source]
    if asked == "auto":
        return AUTO_FORMAT
    return asked


def quality_for(asked: int | QualityPreset | None, fmt: OutputFormat) -> int | None:
    """The encoder quality, or None for PNG (lossless)."""
    if fmt == "png":
        return None
    if isinstance(asked, int):
        return asked
    return QUALITY[asked or "auto"][fmt]


def encode(image: Image.Image, fmt: OutputFormat, quality: int | None, icc_profile: bytes | None) -> Encoded:
    """Encode an RGB/RGBA image; ``icc_profile`` is the source's, converted away to sRGB."""
    image = to_srgb(image, icc_profile)
    if image.mode == "RGBA" and _opaque(image):
        image = image.convert("RGB")
    if fmt == "jpg" and image.mode == "RGBA":
        flat = Image.new("RGB", image.size, JPEG_FLATTEN_ONTO)
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    if image.info:
        image = image.copy()
        image.info = {}
    buffer = io.BytesIO()
    image.save(buffer, _PIL_FORMAT[fmt], **_options(fmt, quality))
    return Encoded(buffer.getvalue(), fmt, image.width, image.height)


def to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert from the source's RGB profile to sRGB; an unreadable profile counts as sRGB."""
    if icc_profile is None:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if "srgb" in ImageCms.getProfileDescription(source).lower():
            return image
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=image.mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    return converted if converted is not None else image


def _opaque(image: Image.Image) -> bool:
    low, _high = image.getchannel("A").getextrema()
    return bool(low == 255)


_PIL_FORMAT: Final[dict[OutputFormat, str]] = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}


def _options(fmt: OutputFormat, quality: int | None) -> dict[str, Any]:
    if fmt == "jpg":
        assert quality is not None
        # Progressive: renders early on slow links, and its Huffman tables are always
        # optimised. 4:4:4 chroma at high quality (sharp colour edges), 4:2:0 below.
        return {"quality": quality, "progressive": True, "subsampling": 0 if quality >= 90 else 2}
    if fmt == "webp":
        return {"quality": quality, "method": 4}
    if fmt == "avif":
        return {"quality": quality, "speed": AVIF_SPEED}
    return {"compress_level": 6}
