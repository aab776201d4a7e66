"""The image pipeline as one pure function: ``process(data, steps, variants, limits) -> Outputs``.

Bytes in, encoded outputs out; no I/O, no settings, no clients, so it can move into a
sandboxed process pool unchanged. One decode serves the main chain and every variant:
the JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives every
chain's first step the resolution it needs, and the EXIF orientation is applied after
the first resize, on the output's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from PIL import Image

from middleware.errors import VAL_2001, JobError

from .decode import SWAPS_SIDES, Decoded, Size, decode
from .encode import Encoded, choose_format, encode, quality_for
from .steps import RGBA, Step, output_format, output_quality
from .transform import Box, Plan, plan

# Pillow's resize first box-averages by an integer factor, leaving at least this ratio
# for the Lanczos pass: 3.0 is visually indistinguishable from a full Lanczos.
REDUCING_GAP: Final = 3.0
# Filters: Lanczos for enlarging and for large reductions; bicubic for a reduction under
# 2x, the usual case after a DCT-scaled JPEG decode, whose 1/2-1/4-1/8 scaling has already
# low-passed the image. Measured on a 12 MP photo to 1080 (bench/results/image.md): 30%
# faster than Lanczos there, luma SSIM 0.98+ against Pillow's full-resolution thumbnail.
SMALL_REDUCTION_FILTER = Image.Resampling.BICUBIC
# A reduced JPEG decode keeps at least this much more resolution than the output needs,
# so the final Lanczos pass always has pixels to work with (a DCT scale alone is a box filter).
DRAFT_MARGIN: Final = 1.5
_QUARTER_TURNS: Final = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Limits:
    """``max_pixels`` caps both the source's declared size and every step's output."""

    max_pixels: int


@dataclass(frozen=True)
class Outputs:
    main: Encoded
    variants: dict[str, Encoded] = field(default_factory=dict)


def process(
    data: bytes, steps: Sequence[Step], variants: Mapping[str, Sequence[Step]], limits: Limits
) -> Outputs:
    """Decode ``data`` once and render the main chain and each variant chain from it.

    Raises:
      JobError: ``FILE_4004`` for an undecodable or oversized source, ``VAL_2001`` when
        a step would produce more than ``limits.max_pixels`` pixels.
    """
    chains = [steps, *variants.values()]
    decoded = decode(data, limits.max_pixels, lambda size: needed_size(chains, size))
    return Outputs(
        render(decoded, steps, limits),
        {name: render(decoded, chain, limits) for name, chain in variants.items()},
    )


def needed_size(chains: Sequence[Sequence[Step]], size: Size) -> Size | None:
    """The smallest decode of ``size`` that loses nothing for any chain; None: full size."""
    need = 0.0
    for chain in chains:
        if not chain:
            return None
        need = max(need, plan(chain[0], size).resolution_needed)
    need *= DRAFT_MARGIN
    if need >= 1:
        return None
    return math.ceil(size[0] * need), math.ceil(size[1] * need)


def render(decoded: Decoded, chain: Sequence[Step], limits: Limits) -> Encoded:
    image, size, upright = decoded.image, decoded.size, decoded.upright
    for index, step in enumerate(chain, start=1):
        step_plan = plan(step, size)
        width, height = step_plan.output_size
        if width * height > limits.max_pixels:
            raise JobError(
                VAL_2001,
                f"step {index} would make a {width}x{height} image, "
                f"over the {limits.max_pixels}-pixel cap (IMAGE_MAX_PIXELS)",
            )
        image = apply(image, step_plan, size, upright)
        size, upright = image.size, None
    if upright is not None:
        image = image.transpose(upright)
    if image.size != size:  # no step, yet decoded smaller: cannot happen, see needed_size
        image = image.resize(size, Image.Resampling.LANCZOS)
    fmt = choose_format(output_format(chain), decoded.source_format)
    return encode(image, fmt, quality_for(output_quality(chain), fmt), decoded.icc_profile)


def apply(
    image: Image.Image, step_plan: Plan, size: Size, upright: Image.Transpose | None = None
) -> Image.Image:
    """Execute a plan made for an upright input of ``size`` on ``image``.

    ``image`` may be a reduced decode, and still as stored: then ``upright`` is the
    transpose to apply, done after the resize (on the output's pixels, not the source's),
    with the plan's box mapped into stored coordinates.
    """
    swaps = upright in SWAPS_SIDES
    upright_w, upright_h = (image.height, image.width) if swaps else image.size
    fx, fy = upright_w / size[0], upright_h / size[1]
    left, top, right, bottom = step_plan.box
    box = (left * fx, top * fy, right * fx, bottom * fy)
    target = step_plan.size
    if upright is not None:
        box = _stored_box(box, upright, image.width, image.height)
        target = (target[1], target[0]) if swaps else target
    if not (box == (0, 0, image.width, image.height) and target == image.size):
        if (
            (fx, fy) == (1, 1)
            and target == (box[2] - box[0], box[3] - box[1])
            and all(v.is_integer() for v in box)
        ):
            image = image.crop((int(box[0]), int(box[1]), int(box[2]), int(box[3])))
        else:
            image = image.resize(target, _filter(box, target), box=box, reducing_gap=REDUCING_GAP)
    if upright is not None:
        image = image.transpose(upright)
    if step_plan.canvas is not None:
        image = _pad(image, step_plan.canvas, step_plan.offset, step_plan.background)
    if step_plan.angle is not None:
        image = _rotate(image, step_plan.angle, step_plan.fill)
    return image


def _stored_box(box: Box, upright: Image.Transpose, width: int, height: int) -> Box:
    """``box`` of the upright image, in the coordinates of the stored ``width`` x ``height`` one."""
    left, top, right, bottom = box
    turn = Image.Transpose
    mapping: dict[Image.Transpose, Box] = {
        turn.FLIP_LEFT_RIGHT: (width - right, top, width - left, bottom),
        turn.FLIP_TOP_BOTTOM: (left, height - bottom, right, height - top),
        turn.ROTATE_180: (width - right, height - bottom, width - left, height - top),
        turn.ROTATE_90: (width - bottom, left, width - top, right),
        turn.ROTATE_270: (top, height - right, bottom, height - left),
        turn.TRANSPOSE: (top, left, bottom, right),
        turn.TRANSVERSE: (width - bottom, height - right, width - top, height - left),
    }
    return mapping[upright]


def _filter(box: Box, size: Size) -> Image.Resampling:
    reduction = min((box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1])
    return SMALL_REDUCTION_FILTER if 1 < reduction <= 2 else Image.Resampling.LANCZOS


def _pad(image: Image.Image, canvas: Size, offset: Size, background: RGBA) -> Image.Image:
    if image.mode == "RGB" and background[3] == 255:
        padded = Image.new("RGB", canvas, background[:3])
        padded.paste(image, offset)
        return padded
    padded = Image.new("RGBA", canvas, background)
    padded.alpha_composite(image.convert("RGBA"), offset)
    return padded


def _rotate(image: Image.Image, angle: int | str, fill: RGBA) -> Image.Image:
    if angle == "hflip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if angle == "vflip":
        return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    assert isinstance(angle, int)
    if angle == 0:
        return image
    if angle in _QUARTER_TURNS:
        return image.transpose(_QUARTER_TURNS[angle])
    # Pillow turns counter-clockwise; Cloudinary's angles are clockwise.
    if image.mode == "RGB" and fill[3] == 255:
        return image.rotate(-angle, Image.Resampling.BICUBIC, expand=True, fillcolor=fill[:3])
    return image.convert("RGBA").rotate(-angle, Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
