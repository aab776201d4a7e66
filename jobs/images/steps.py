"""Cloudinary-style transformation steps, parsed and validated (pure: no Pillow decoding).

A step is a JSON object such as ``{"width": 1080, "height": 1080, "crop": "limit"}``;
a chain is a list of steps, each applied to the previous one's output. Unknown keys,
wrong types and impossible combinations raise :class:`StepError` (a ``ValueError``)
naming the step and the key: the payload schema reports it as ``VAL_2001`` before
anything is enqueued. Nothing is silently ignored. Semantics: ``docs/images.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, get_args

CropMode = Literal["scale", "fit", "limit", "mfit", "fill", "lfill", "pad", "lpad", "mpad", "crop", "thumb"]
Gravity = Literal[
    "north_west", "north", "north_east", "west", "center", "east", "south_west", "south", "south_east"
]
FormatChoice = Literal["jpg", "png", "webp", "avif", "auto"]
QualityPreset = Literal["auto", "auto:best", "auto:good", "auto:eco", "auto:low"]
Flip = Literal["hflip", "vflip"]
RGBA = tuple[int, int, int, int]

CROP_MODES: Final = frozenset(get_args(CropMode))
GRAVITIES: Final = frozenset(get_args(Gravity))
FORMATS: Final = frozenset(get_args(FormatChoice))
QUALITY_PRESETS: Final = frozenset(get_args(QualityPreset))
# Modes that only resize: the whole image stays visible, so gravity and padding mean nothing.
RESIZE_MODES: Final = frozenset({"scale", "fit", "limit", "mfit"})
PAD_MODES: Final = frozenset({"pad", "lpad", "mpad"})

MAX_DIMENSION: Final = 16_384
MAX_ASPECT_RATIO: Final = 100.0
MAX_VARIANTS: Final = 8
TRANSPARENT: Final[RGBA] = (255, 255, 255, 0)

KNOWN_KEYS: Final = (
    "width",
    "height",
    "crop",
    "gravity",
    "x",
    "y",
    "aspect_ratio",
    "background",
    "angle",
    "quality",
    "format",
    "fetch_format",
)
_VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_RATIO = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_DECIMAL = re.compile(r"^\d{1,5}(\.\d{1,6})?$")
_HEX = re.compile(r"^(?:#|rgb:)([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_DETECTION = ("auto", "face", "faces", "custom", "ocr_text", "liquid")


class StepError(ValueError):
    """A transformation the service cannot perform exactly as asked."""


@dataclass(frozen=True)
class Step:
    """One validated step. ``width``/``height``: int = pixels, float in (0, 1] = fraction of the input."""

    width: int | float | None = None
    height: int | float | None = None
    crop: CropMode = "scale"
    gravity: Gravity | None = None
    x: int | float | None = None
    y: int | float | None = None
    aspect_ratio: float | None = None
    background: RGBA | None = None
    angle: int | Flip | None = None
    quality: int | QualityPreset | None = None
    format: FormatChoice | None = None

    @property
    def has_size(self) -> bool:
        return self.width is not None or self.height is not None or self.aspect_ratio is not None

    def canonical(self) -> dict[str, Any]:
        """The step's meaning as plain JSON: equal for steps that do the same thing."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "background" and value is not None:
                value = "#" + "".join(f"{c:02x}" for c in value)
            if value is not None and not (f.name == "crop" and value == "scale"):
                out[f.name] = value
        return out


def parse_chain(raw: Sequence[Any], name: str = "transformations") -> tuple[Step, ...]:
    """Validate a list of steps; errors name the chain, the step (1-based) and the key."""
    steps = tuple(_parse_step(item, f"{name}[{index}]") for index, item in enumerate(raw, start=1))
    explicit = [s.format for s in steps if s.format is not None]
    if explicit and explicit[-1] == "png" and any(s.quality is not None for s in steps):
        raise StepError(f"{name}: quality applies to jpg, webp and avif; png output is lossless")
    return steps


def parse_variants(raw: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Step, ...]]:
    """Validate named variant chains (``{"thumb": [...], "full": [...]}``)."""
    if len(raw) > MAX_VARIANTS:
        raise StepError(f"at most {MAX_VARIANTS} variants")
    chains: dict[str, tuple[Step, ...]] = {}
    for name, chain in raw.items():
        if not _VARIANT_NAME.match(name):
            raise StepError(f"variant name {name!r} must match {_VARIANT_NAME.pattern}")
        chains[name] = parse_chain(chain, f"variants.{name}")
    return chains


def output_format(steps: Sequence[Step]) -> FormatChoice | None:
    """The last format a chain asks for (a later step overrides an earlier one), if any."""
    return next((s.format for s in reversed(steps) if s.format is not None), None)


def output_quality(steps: Sequence[Step]) -> int | QualityPreset | None:
    return next((s.quality for s in reversed(steps) if s.quality is not None), None)


# --- one step ---------------------------------------------------------------------------


def _parse_step(raw: Any, where: str) -> Step:
    if not isinstance(raw, Mapping):
        raise StepError(f"{where}: must be an object")
    if not raw:
        raise StepError(f"{where}: an empty step does nothing")
    unknown = sorted(str(k) for k in raw if k not in KNOWN_KEYS)
    if unknown:
        raise StepError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, parse in _PARSERS.items():
        if key in raw:
            try:
                values[key] = parse(raw[key])
            except StepError as exc:
                raise StepError(f"{where}.{key}: {exc}") from None
    fmt = values.pop("fetch_format", None)
    if fmt is not None:
        if values.get("format", fmt) != fmt:
            raise StepError(f"{where}: format and fetch_format disagree")
        values["format"] = fmt
    step = Step(**values)
    _check_combination(step, explicit_crop="crop" in raw, where=where)
    return step


def _check_combination(step: Step, *, explicit_crop: bool, where: str) -> None:
    mode = step.crop
    if explicit_crop and not step.has_size:
        raise StepError(f"{where}: crop {mode!r} needs width, height or aspect_ratio")
    if step.width is not None and step.height is not None and step.aspect_ratio is not None:
        raise StepError(f"{where}: give at most two of width, height and aspect_ratio")
    if step.aspect_ratio is not None and step.width is None and step.height is None and mode in RESIZE_MODES:
        raise StepError(f"{where}: aspect_ratio alone needs a cropping or padding mode, not {mode!r}")
    if step.gravity is not None and mode in RESIZE_MODES:
        raise StepError(f"{where}: gravity has no effect with crop {mode!r} (the whole image stays visible)")
    if (step.x is not None or step.y is not None) and mode != "crop":
        raise StepError(f"{where}: x and y apply to crop 'crop' only")
    rotated_freely = isinstance(step.angle, int) and step.angle % 90 != 0
    if step.background is not None and mode not in PAD_MODES and not rotated_freely:
        raise StepError(
            f"{where}: background applies to pad, lpad and mpad, or to an angle not a multiple of 90"
        )


# --- one value ----------------------------------------------------------------------------


def _number(value: Any) -> int | float:
    # JSON true/false are ints in Python: refuse them explicitly.
    if isinstance(value, bool):
        raise StepError("must be a number, not true or false")
    if not isinstance(value, int | float):
        raise StepError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise StepError("must be finite")
    return value


def _dimension(value: Any) -> int | float:
    number = _number(value)
    if isinstance(number, int):
        if not 1 <= number <= MAX_DIMENSION:
            raise StepError(f"pixels must be between 1 and {MAX_DIMENSION}")
        return number
    if not 0 < number <= 1:
        raise StepError("a decimal is a fraction of the input in (0, 1]; give pixels as an integer")
    return number


def _offset(value: Any) -> int | float:
    number = _number(value)
    if isinstance(number, int) and abs(number) > MAX_DIMENSION:
        raise StepError(f"pixels must be between -{MAX_DIMENSION} and {MAX_DIMENSION}")
    if isinstance(number, float) and not -1 <= number <= 1:
        raise StepError("a decimal is a fraction of the input in [-1, 1]")
    return number


def _crop(value: Any) -> str:
    if value in CROP_MODES:
        return str(value)
    if isinstance(value, str) and value in ("auto", "fill_pad", "auto_pad", "imagga_crop", "imagga_scale"):
        raise StepError(f"{value!r} needs content detection, which this service does not run")
    raise StepError(f"must be one of {', '.join(sorted(CROP_MODES))}")


def _gravity(value: Any) -> str:
    if value in GRAVITIES:
        return str(value)
    if isinstance(value, str) and value.split(":", 1)[0] in _DETECTION:
        raise StepError(f"{value!r} needs face or content detection, which this service does not run")
    raise StepError(f"must be one of {', '.join(sorted(GRAVITIES))}")


def _aspect_ratio(value: Any) -> float:
    if isinstance(value, str):
        ratio = _RATIO.match(value)
        if ratio:
            a, b = int(ratio.group(1)), int(ratio.group(2))
            if a == 0 or b == 0:
                raise StepError("both sides of a:b must be positive")
            result = a / b
        elif _DECIMAL.match(value):
            result = float(value)
        else:
            raise StepError("must be a number or 'width:height' such as '16:9'")
    else:
        result = float(_number(value))
    if not 1 / MAX_ASPECT_RATIO <= result <= MAX_ASPECT_RATIO:
        raise StepError(f"must be between 1:{MAX_ASPECT_RATIO:g} and {MAX_ASPECT_RATIO:g}:1")
    return result


def _background(value: Any) -> RGBA:
    if not isinstance(value, str):
        raise StepError("must be a colour string")
    if value == "transparent":
        return TRANSPARENT
    match = _HEX.match(value)
    if match:
        digits = match.group(1)
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        if len(digits) == 6:
            digits += "ff"
        r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
        return (r, g, b, a)
    if re.fullmatch(r"[a-z]{3,20}", value):
        from PIL import ImageColor  # pure Python: the CSS colour names Cloudinary also accepts

        try:
            r, g, b = ImageColor.getrgb(value)[:3]
        except ValueError:
            pass
        else:
            return (r, g, b, 255)
    raise StepError("must be a colour name, '#rrggbb', '#rrggbbaa', 'rgb:rrggbb' or 'transparent'")


def _angle(value: Any) -> int | str:
    if value in ("hflip", "vflip"):
        return str(value)
    if isinstance(value, str):
        raise StepError(f"{value!r} is not supported; use whole degrees (clockwise), 'hflip' or 'vflip'")
    number = _number(value)
    if isinstance(number, float) or not -360 <= number <= 360:
        raise StepError("must be whole degrees between -360 and 360 (clockwise), 'hflip' or 'vflip'")
    return number % 360


def _quality(value: Any) -> int | str:
    if value in QUALITY_PRESETS:
        return str(value)
    number = _number(value) if not isinstance(value, str) else None
    if not isinstance(number, int) or not 1 <= number <= 100:
        raise StepError(f"must be an integer from 1 to 100 or one of {', '.join(sorted(QUALITY_PRESETS))}")
    return number


def _format(value: Any) -> str:
    if value == "jpeg":
        return "jpg"
    if value in FORMATS:
        return str(value)
    raise StepError(f"must be one of {', '.join(sorted(FORMATS))}")


_PARSERS: Final = {
    "width": _dimension,
    "height": _dimension,
    "crop": _crop,
    "gravity": _gravity,
    "x": _offset,
    "y": _offset,
    "aspect_ratio": _aspect_ratio,
    "background": _background,
    "angle": _angle,
    "quality": _quality,
    "format": _format,
    "fetch_format": _format,
}
