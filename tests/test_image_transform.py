"""Cloudinary semantics: exact output sizes per crop mode, gravity by pixel colour, chains, variants."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.images.pipeline import Limits, needed_size, process
from jobs.images.steps import parse_chain, parse_variants
from jobs.images.transform import plan
from middleware.errors import JobError
from tests.support.images import GRID_COLOURS, encoded, grid, jpeg, opened, quadrants, rgb_at

LIMITS = Limits(max_pixels=5_000_000)
SRC = (400, 200)  # every size case below starts from a 400x200 (2:1) input


@pytest.mark.parametrize(
    ("step", "size", "canvas"),
    [
        # scale (default): exact when both are given, proportional with one, upscales
        ({"width": 100}, (100, 50), None),
        ({"height": 50}, (100, 50), None),
        ({"width": 100, "height": 100}, (100, 100), None),
        ({"width": 0.5}, (200, 100), None),
        ({"width": 800}, (800, 400), None),
        ({"width": 100, "aspect_ratio": "1:1"}, (100, 100), None),
        # fit: inside the box, aspect kept, upscales
        ({"width": 100, "height": 100, "crop": "fit"}, (100, 50), None),
        ({"width": 1000, "height": 1000, "crop": "fit"}, (1000, 500), None),
        ({"height": 100, "crop": "fit"}, (200, 100), None),
        # limit: like fit, never enlarges
        ({"width": 100, "height": 100, "crop": "limit"}, (100, 50), None),
        ({"width": 1000, "height": 1000, "crop": "limit"}, (400, 200), None),
        ({"width": 500, "height": 100, "crop": "limit"}, (200, 100), None),
        ({"width": 1000, "crop": "limit"}, (400, 200), None),
        # mfit: like fit, only enlarges; an image not inside the box is left as it is
        ({"width": 1000, "height": 1000, "crop": "mfit"}, (1000, 500), None),
        ({"width": 800, "height": 800, "crop": "mfit"}, (800, 400), None),
        ({"width": 100, "height": 100, "crop": "mfit"}, (400, 200), None),
        ({"width": 500, "height": 100, "crop": "mfit"}, (400, 200), None),
        # fill: exactly w x h, cropping the excess; upscales
        ({"width": 100, "height": 100, "crop": "fill"}, (100, 100), None),
        ({"width": 1000, "height": 1000, "crop": "fill"}, (1000, 1000), None),
        ({"width": 100, "crop": "fill"}, (100, 50), None),
        ({"aspect_ratio": "1:1", "crop": "fill"}, (200, 200), None),
        ({"width": 300, "aspect_ratio": "3:1", "crop": "fill"}, (300, 100), None),
        # lfill: fill that never enlarges; w and h are then upper bounds
        ({"width": 100, "height": 100, "crop": "lfill"}, (100, 100), None),
        ({"width": 1000, "height": 1000, "crop": "lfill"}, (400, 200), None),
        ({"width": 800, "height": 100, "crop": "lfill"}, (400, 100), None),
        ({"width": 300, "height": 300, "crop": "lfill"}, (300, 200), None),
        # thumb: a fill around the gravity point (no face detection)
        ({"width": 100, "height": 100, "crop": "thumb"}, (100, 100), None),
        # pad: fit, then pad to exactly w x h; upscales
        ({"width": 100, "height": 100, "crop": "pad"}, (100, 50), (100, 100)),
        ({"width": 1000, "height": 1000, "crop": "pad"}, (1000, 500), (1000, 1000)),
        ({"aspect_ratio": "1:1", "crop": "pad"}, (400, 200), (400, 400)),
        ({"width": 100, "crop": "pad"}, (100, 50), None),
        # lpad: pad that never enlarges (a small image is padded around, not scaled)
        ({"width": 100, "height": 100, "crop": "lpad"}, (100, 50), (100, 100)),
        ({"width": 1000, "height": 1000, "crop": "lpad"}, (400, 200), (1000, 1000)),
        # mpad: pad that only enlarges; an image not inside the box is left as it is
        ({"width": 1000, "height": 1000, "crop": "mpad"}, (1000, 500), (1000, 1000)),
        ({"width": 400, "height": 400, "crop": "mpad"}, (400, 200), (400, 400)),
        ({"width": 100, "height": 100, "crop": "mpad"}, (400, 200), None),
        # crop: a region at the original scale, clamped to the image
        ({"width": 100, "height": 50, "crop": "crop"}, (100, 50), None),
        ({"width": 1000, "height": 1000, "crop": "crop"}, (400, 200), None),
        ({"width": 100, "crop": "crop"}, (100, 200), None),
        ({"width": 0.25, "height": 0.5, "crop": "crop"}, (100, 100), None),
        ({"aspect_ratio": "1:1", "crop": "crop"}, (200, 200), None),
    ],
)
def test_output_size_per_crop_mode(
    step: dict[str, Any], size: tuple[int, int], canvas: tuple[int, int] | None
) -> None:
    [parsed] = parse_chain([step])
    result = plan(parsed, SRC)
    assert (result.size, result.canvas) == (size, canvas)
    assert result.output_size == (canvas or size)


@pytest.mark.parametrize(
    ("step", "size"),
    [
        ({"width": 100, "height": 100, "crop": "limit", "format": "png"}, (100, 50)),
        ({"width": 1000, "height": 1000, "crop": "limit", "format": "png"}, (400, 200)),
        ({"width": 1000, "height": 1000, "crop": "mfit", "format": "png"}, (1000, 500)),
        ({"width": 300, "height": 300, "crop": "lfill", "format": "png"}, (300, 200)),
        ({"width": 1000, "height": 1000, "crop": "lpad", "format": "png"}, (1000, 1000)),
        ({"width": 100, "height": 100, "crop": "mpad", "format": "png"}, (400, 200)),
        ({"width": 100, "angle": 90, "format": "png"}, (50, 100)),
    ],
)
def test_rendered_images_have_the_planned_size(step: dict[str, Any], size: tuple[int, int]) -> None:
    out = process(encoded(quadrants(400, 200), "PNG"), parse_chain([step]), {}, LIMITS).main
    assert (out.width, out.height) == size
    assert opened(out.data).size == size


def _png(steps: list[dict[str, Any]], source: bytes | None = None) -> Any:
    data = source if source is not None else encoded(grid(90, 60), "PNG")
    return opened(process(data, parse_chain([*steps, {"format": "png"}]), {}, LIMITS).main.data)


@pytest.mark.parametrize(
    "gravity",
    sorted(
        {"north_west", "north", "north_east", "west", "center", "east", "south_west", "south", "south_east"}
    ),
)
def test_crop_gravity_picks_the_right_cell(gravity: str) -> None:
    column = 0 if "west" in gravity else 2 if "east" in gravity else 1
    row = 0 if "north" in gravity else 2 if "south" in gravity else 1
    out = _png([{"width": 30, "height": 20, "crop": "crop", "gravity": gravity}])
    assert out.size == (30, 20)
    assert rgb_at(out, (15, 10)) == GRID_COLOURS[(column, row)]
    assert rgb_at(out, (0, 0)) == GRID_COLOURS[(column, row)] == rgb_at(out, (29, 19))


@pytest.mark.parametrize(("gravity", "column"), [("west", 0), ("center", 1), ("east", 2)])
def test_fill_gravity_keeps_the_side_asked_for(gravity: str, column: int) -> None:
    # 90x60 filled to 30x60: no scaling needed, one column of cells survives.
    out = _png([{"width": 30, "height": 60, "crop": "fill", "gravity": gravity}])
    assert [rgb_at(out, (15, y)) for y in (10, 30, 50)] == [GRID_COLOURS[(column, r)] for r in range(3)]


@pytest.mark.parametrize(("gravity", "row"), [("north", 0), ("south", 2)])
def test_fill_gravity_vertical(gravity: str, row: int) -> None:
    # 90x60 to 180x40: scaled x2 to 180x120, then a 40-pixel band (one cell row) is kept.
    out = _png([{"width": 180, "height": 40, "crop": "fill", "gravity": gravity}])
    assert out.size == (180, 40)
    assert [rgb_at(out, (x, 20)) for x in (30, 90, 150)] == [GRID_COLOURS[(c, row)] for c in range(3)]


@pytest.mark.parametrize(
    ("gravity", "image_x", "padding_x"), [("west", 10, 170), ("east", 170, 10), ("center", 90, 10)]
)
def test_pad_gravity_places_the_image(gravity: str, image_x: int, padding_x: int) -> None:
    out = _png([{"width": 180, "height": 60, "crop": "pad", "gravity": gravity, "background": "#000080"}])
    assert out.size == (180, 60)
    assert rgb_at(out, (image_x, 30)) != (0, 0, 128)
    assert rgb_at(out, (padding_x, 30)) == (0, 0, 128)
    if gravity == "center":
        assert rgb_at(out, (170, 30)) == (0, 0, 128)


def test_pad_with_transparent_background_keeps_alpha() -> None:
    out = _png([{"width": 90, "height": 90, "crop": "pad", "background": "transparent"}])
    assert out.mode == "RGBA"
    assert out.getpixel((45, 5))[3] == 0
    assert out.getpixel((45, 45))[3] == 255


def test_crop_x_y_offsets() -> None:
    # Without gravity x/y are the top-left corner.
    assert (
        rgb_at(_png([{"width": 30, "height": 20, "crop": "crop", "x": 30, "y": 20}]), (15, 10))
        == GRID_COLOURS[(1, 1)]
    )
    # From a south_east anchor, x moves the region left (inwards), y up.
    out = _png([{"width": 30, "height": 20, "crop": "crop", "gravity": "south_east", "x": 30}])
    assert rgb_at(out, (15, 10)) == GRID_COLOURS[(1, 2)]
    out = _png([{"width": 30, "height": 20, "crop": "crop", "gravity": "south_east", "y": 0.34}])
    assert rgb_at(out, (15, 10)) == GRID_COLOURS[(2, 1)]
    # Offsets beyond the edge are clamped to it.
    out = _png([{"width": 30, "height": 20, "crop": "crop", "x": 500, "y": -500}])
    assert rgb_at(out, (15, 10)) == GRID_COLOURS[(2, 0)]


@pytest.mark.parametrize(
    ("angle", "size", "top_left", "top_right"),
    [
        (90, (60, 90), GRID_COLOURS[(0, 2)], GRID_COLOURS[(0, 0)]),  # clockwise, as Cloudinary
        (-90, (60, 90), GRID_COLOURS[(2, 0)], GRID_COLOURS[(2, 2)]),
        (180, (90, 60), GRID_COLOURS[(2, 2)], GRID_COLOURS[(0, 2)]),
        ("hflip", (90, 60), GRID_COLOURS[(2, 0)], GRID_COLOURS[(0, 0)]),
        ("vflip", (90, 60), GRID_COLOURS[(0, 2)], GRID_COLOURS[(2, 2)]),
    ],
)
def test_angle_turns_clockwise(angle: Any, size: tuple[int, int], top_left: Any, top_right: Any) -> None:
    out = _png([{"angle": angle}])
    assert out.size == size
    assert rgb_at(out, (2, 2)) == top_left
    assert rgb_at(out, (size[0] - 3, 2)) == top_right


def test_free_angle_expands_the_canvas_with_the_background() -> None:
    out = _png([{"angle": 45, "background": "#00ff00"}])
    assert 100 < out.width < 110 and 100 < out.height < 110  # 90x60 at 45 degrees: ~106x106
    assert rgb_at(out, (1, 1)) == (0, 255, 0)
    assert rgb_at(out, (out.width // 2, out.height // 2)) == GRID_COLOURS[(1, 1)]


def test_chained_steps_apply_in_order() -> None:
    out = _png(
        [
            {"width": 60, "height": 40, "crop": "crop", "gravity": "north_west"},  # the 2x2 top-left cells
            {"width": 30},  # halved: 30x20
            {"angle": 90},  # 20x30, clockwise
        ]
    )
    assert out.size == (20, 30)
    assert rgb_at(out, (2, 2)) == GRID_COLOURS[(0, 1)]
    assert rgb_at(out, (17, 2)) == GRID_COLOURS[(0, 0)]
    assert rgb_at(out, (17, 27)) == GRID_COLOURS[(1, 0)]


def test_fractions_refer_to_each_steps_own_input() -> None:
    out = _png([{"width": 0.5}, {"width": 0.5}])
    assert out.size == (22, 15)  # 90 -> 45 -> 22 (round half to even), 60 -> 30 -> 15


def test_variants_from_one_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.images.decode import decode

    decodes = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        decodes.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr("jobs.images.pipeline.decode", counting)
    outputs = process(
        jpeg(grid(900, 600)),
        parse_chain([{"width": 300, "height": 300, "crop": "limit"}]),
        parse_variants(
            {
                "thumb": [{"width": 100, "height": 100, "crop": "thumb", "format": "webp"}],
                "medium": [{"width": 450, "format": "png"}],
                "full": [],
            }
        ),
        LIMITS,
    )
    assert len(decodes) == 1
    assert (outputs.main.width, outputs.main.height, outputs.main.format) == (300, 200, "jpg")
    shapes = {name: (o.width, o.height, o.format) for name, o in outputs.variants.items()}
    assert shapes == {"thumb": (100, 100, "webp"), "medium": (450, 300, "png"), "full": (900, 600, "jpg")}
    assert opened(outputs.variants["thumb"].data).format == "WEBP"


def test_jpeg_is_decoded_at_reduced_scale_only_as_far_as_every_chain_allows() -> None:
    limit_300 = parse_chain([{"width": 300, "height": 300, "crop": "limit"}])
    assert needed_size([limit_300], (2400, 1600)) == (450, 300)  # with the 1.5x margin
    assert needed_size([limit_300, ()], (2400, 1600)) is None  # an untouched variant needs all pixels
    assert needed_size([parse_chain([{"width": 10, "crop": "crop"}])], (2400, 1600)) is None
    from jobs.images.decode import decode

    decoded = decode(jpeg(grid(2400, 1600)), 10_000_000, lambda size: needed_size([limit_300], size))
    assert decoded.size == (2400, 1600)
    assert decoded.image.size == (600, 400)  # 1/4 scale: the smallest that still gives >= 450x300


def test_a_step_over_the_pixel_cap_is_refused() -> None:
    with pytest.raises(JobError) as info:
        process(
            encoded(grid(90, 60), "PNG"),
            parse_chain([{"width": 4000, "height": 4000}]),
            {},
            Limits(1_000_000),
        )
    assert info.value.code == "VAL_2001"
    assert "4000x4000" in info.value.message and "IMAGE_MAX_PIXELS" in info.value.message
