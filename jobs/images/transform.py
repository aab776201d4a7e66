"""What one step does to an image of a given size, in Cloudinary's semantics (pure arithmetic).

:func:`plan` turns a :class:`Step` and an input size into a :class:`Plan`: the region of
the input to keep (``box``, in input pixels, fractional for sub-pixel-exact fills), the
size that region is resized to, an optional padding canvas and a rotation. The pipeline
executes plans with Pillow; keeping the geometry here makes every size rule testable
without decoding a pixel. Mode rules and the documented choices: ``docs/images.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from .steps import PAD_MODES, RGBA, TRANSPARENT, Gravity, Step

Size = tuple[int, int]
Box = tuple[float, float, float, float]

WHITE: Final[RGBA] = (255, 255, 255, 255)

# Where gravity anchors a region: 0 = left/top edge, 0.5 = centre, 1 = right/bottom edge.
_ANCHOR: Final[dict[str, tuple[float, float]]] = {
    "north_west": (0, 0),
    "north": (0.5, 0),
    "north_east": (1, 0),
    "west": (0, 0.5),
    "center": (0.5, 0.5),
    "east": (1, 0.5),
    "south_west": (0, 1),
    "south": (0.5, 1),
    "south_east": (1, 1),
}


@dataclass(frozen=True)
class Plan:
    """Keep ``box`` of the input, resize it to ``size``, pad onto ``canvas``, then rotate.

    ``background`` fills the padding; ``fill`` the corners a free rotation exposes.
    """

    box: Box
    size: Size
    canvas: Size | None = None
    offset: Size = (0, 0)
    background: RGBA = WHITE
    angle: int | str | None = None
    fill: RGBA = TRANSPARENT

    @property
    def resolution_needed(self) -> float:
        """How many output pixels each input pixel becomes (< 1: the input may be decoded smaller)."""
        left, top, right, bottom = self.box
        return max(self.size[0] / (right - left), self.size[1] / (bottom - top))

    @property
    def output_size(self) -> Size:
        width, height = self.canvas or self.size
        if self.angle in (90, 270):
            return height, width
        if isinstance(self.angle, int) and self.angle % 90:
            rad = math.radians(self.angle)
            cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
            # An upper bound of Pillow's expanded canvas (it rounds the corners outwards).
            return math.ceil(width * cos + height * sin) + 1, math.ceil(width * sin + height * cos) + 1
        return width, height


def plan(step: Step, size: Size) -> Plan:
    """The plan of ``step`` for an input of ``size`` (width, height)."""
    in_w, in_h = size
    w = _pixels(step.width, in_w)
    h = _pixels(step.height, in_h)
    w, h = _apply_aspect_ratio(step, in_w, in_h, w, h)
    return replace(
        _MODES[step.crop](step, in_w, in_h, w, h), angle=step.angle, fill=step.background or TRANSPARENT
    )


def _pixels(value: int | float | None, whole: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return max(1, round(value * whole))


def _apply_aspect_ratio(
    step: Step, in_w: int, in_h: int, w: int | None, h: int | None
) -> tuple[int | None, int | None]:
    ratio = step.aspect_ratio
    if ratio is None:
        return w, h
    if w is not None:
        return w, max(1, round(w / ratio))
    if h is not None:
        return max(1, round(h * ratio)), h
    wider = in_w / in_h > ratio
    if step.crop in PAD_MODES:  # the smallest box of that ratio holding the whole image
        return (in_w, max(1, round(in_w / ratio))) if wider else (max(1, round(in_h * ratio)), in_h)
    # the largest box of that ratio inside the image
    return (max(1, round(in_h * ratio)), in_h) if wider else (in_w, max(1, round(in_w / ratio)))


# --- the modes: each returns the plan without its rotation --------------------------------

Mode = Callable[[Step, int, int, int | None, int | None], "Plan"]


def _whole(in_w: int, in_h: int, size: Size) -> Plan:
    return Plan(box=(0.0, 0.0, float(in_w), float(in_h)), size=size)


def _proportional(in_w: int, in_h: int, w: int | None, h: int | None, clamp: str | None = None) -> Plan:
    """Scale keeping the aspect ratio to the one given dimension; ``clamp`` = "down"/"up" only."""
    scale = w / in_w if w is not None else (h or in_h) / in_h
    if (clamp == "down" and scale >= 1) or (clamp == "up" and scale <= 1):
        return _whole(in_w, in_h, (in_w, in_h))
    if w is not None:
        return _whole(in_w, in_h, (w, max(1, round(in_h * w / in_w))))
    assert h is not None
    return _whole(in_w, in_h, (max(1, round(in_w * h / in_h)), h))


def _fit_size(in_w: int, in_h: int, w: int, h: int, scale: float) -> Size:
    return min(w, max(1, round(in_w * scale))), min(h, max(1, round(in_h * scale)))


def _scale(step: Step, in_w: int, in_h: int, w: int | None, h: int | None) -> Plan:
    if w is None and h is None:
        return _whole(in_w, in_h, (in_w, in_h))
    if w is not None and h is not None:
        return _whole(in_w, in_h, (w, h))  # both given: the aspect ratio is not kept
    return _proportional(in_w, in_h, w, h)


def _fit_family(clamp: str | None) -> Mode:
    def mode(step: Step, in_w: int, in_h: int, w: int | None, h: int | None) -> Plan:
        if w is None or h is None:
            return _proportional(in_w, in_h, w, h, clamp)
        scale = min(w / in_w, h / in_h)
        if (clamp == "down" and scale >= 1) or (clamp == "up" and scale <= 1):
            return _whole(in_w, in_h, (in_w, in_h))
        return _whole(in_w, in_h, _fit_size(in_w, in_h, w, h, scale))

    return mode


def _fill_family(limit: bool) -> Mode:
    def mode(step: Step, in_w: int, in_h: int, w: int | None, h: int | None) -> Plan:
        if w is None or h is None:
            return _proportional(in_w, in_h, w, h, "down" if limit else None)
        scale = max(w / in_w, h / in_h)
        if limit:
            # lfill never enlarges: at most the original resolution, cropped to at most w x h.
            scale = min(1.0, scale)
            w, h = min(w, max(1, round(in_w * scale))), min(h, max(1, round(in_h * scale)))
        region_w, region_h = min(in_w, w / scale), min(in_h, h / scale)
        fx, fy = _ANCHOR[step.gravity or "center"]
        left, top = (in_w - region_w) * fx, (in_h - region_h) * fy
        return Plan(box=(left, top, left + region_w, top + region_h), size=(w, h))

    return mode


def _pad_family(clamp: str | None) -> Mode:
    def mode(step: Step, in_w: int, in_h: int, w: int | None, h: int | None) -> Plan:
        if w is None or h is None:
            return _proportional(in_w, in_h, w, h, clamp)
        scale = min(w / in_w, h / in_h)
        if clamp == "up" and scale < 1:
            return _whole(in_w, in_h, (in_w, in_h))  # mpad: larger than the box, left as it is
        if clamp == "down":
            scale = min(1.0, scale)
        inner = _fit_size(in_w, in_h, w, h, scale)
        fx, fy = _ANCHOR[step.gravity or "center"]
        offset = (round((w - inner[0]) * fx), round((h - inner[1]) * fy))
        return replace(
            _whole(in_w, in_h, inner), canvas=(w, h), offset=offset, background=step.background or WHITE
        )

    return mode


def _crop(step: Step, in_w: int, in_h: int, w: int | None, h: int | None) -> Plan:
    region_w, region_h = min(in_w, w or in_w), min(in_h, h or in_h)
    # Without gravity, x/y are the region's top-left corner (Cloudinary); else centred.
    gravity: Gravity = step.gravity or (
        "north_west" if step.x is not None or step.y is not None else "center"
    )
    fx, fy = _ANCHOR[gravity]
    left = round((in_w - region_w) * fx) + _offset(step.x, in_w, toward_left=fx == 1)
    top = round((in_h - region_h) * fy) + _offset(step.y, in_h, toward_left=fy == 1)
    left, top = min(max(0, left), in_w - region_w), min(max(0, top), in_h - region_h)
    box = (float(left), float(top), float(left + region_w), float(top + region_h))
    return Plan(box=box, size=(region_w, region_h))


def _offset(value: int | float | None, whole: int, *, toward_left: bool) -> int:
    """Offsets point inwards from the gravity edge: from an east/south anchor, +x moves left/up."""
    if value is None:
        return 0
    pixels = value if isinstance(value, int) else round(value * whole)
    return -pixels if toward_left else pixels


_MODES: Final[dict[str, Mode]] = {
    "scale": _scale,
    "fit": _fit_family(None),
    "limit": _fit_family("down"),
    "mfit": _fit_family("up"),
    "fill": _fill_family(limit=False),
    "thumb": _fill_family(limit=False),  # no face detection: a fill around the gravity point
    "lfill": _fill_family(limit=True),
    "pad": _pad_family(None),
    "lpad": _pad_family("down"),
    "mpad": _pad_family("up"),
    "crop": _crop,
}
