"""Decoding untrusted bytes: formats, orientation, colour modes, privacy, hostile files."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from jobs.images.decode import decode, escalate_bomb_warnings, sniff
from jobs.images.pipeline import Limits, process
from jobs.images.steps import parse_chain
from middleware.errors import JobError
from tests.support.images import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    YELLOW,
    animated_gif,
    avif,
    close_to,
    cmyk_jpeg,
    encoded,
    gps_exif,
    heic,
    hostile_inputs,
    jpeg,
    no_metadata,
    opened,
    oriented_jpeg,
    palette_png_with_transparency,
    png16_grey,
    png_bomb,
    quadrants,
    rgb_at,
    wide_gamut_icc,
)

LIMITS = Limits(max_pixels=60_000_000)
OUTPUT_FORMATS = ["jpg", "png", "webp", "avif"]
PIL_NAMES = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}


def _render(data: bytes, fmt: str, steps: list[dict[str, Any]] | None = None) -> Image.Image:
    out = process(data, parse_chain([*(steps or []), {"format": fmt}]), {}, LIMITS).main
    image = opened(out.data)
    assert image.format == PIL_NAMES[fmt]
    assert no_metadata(out.data) == []
    return image


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (jpeg(), "jpeg"),
        (encoded(quadrants(), "PNG"), "png"),
        (animated_gif(), "gif"),
        (encoded(quadrants(), "WEBP"), "webp"),
        (avif(), "avif"),
        (heic(), "heif"),
    ],
)
def test_formats_are_sniffed_from_the_bytes(data: bytes, name: str) -> None:
    assert sniff(data) == name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_same_upright_image(orientation: int) -> None:
    out = _render(oriented_jpeg(orientation), "png")
    assert out.size == (48, 24)
    corners = [rgb_at(out, xy) for xy in ((6, 6), (42, 6), (6, 18), (42, 18))]
    assert all(close_to(c, e) for c, e in zip(corners, [RED, GREEN, BLUE, YELLOW], strict=True)), corners


@pytest.mark.parametrize("orientation", [6, 8])
def test_orientation_is_applied_before_geometry_on_reduced_decodes(orientation: int) -> None:
    # A 1200x600 upright picture stored sideways: limit 150 must see the upright 2:1 shape.
    data = oriented_jpeg(orientation, quadrants(1200, 600))
    out = _render(data, "png", [{"width": 150, "height": 150, "crop": "limit"}])
    assert out.size == (150, 75)
    assert close_to(rgb_at(out, (10, 10)), RED) and close_to(rgb_at(out, (140, 65)), YELLOW)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("step", "size", "expected"),
    [
        # upright quadrants 1200x600: red top-left, green top-right, blue bottom-left, yellow bottom-right
        (
            {"width": 600, "height": 600, "crop": "crop", "gravity": "north_west"},
            (600, 600),
            [RED, RED, BLUE, BLUE],
        ),
        (
            {"width": 100, "height": 100, "crop": "fill", "gravity": "east"},
            (100, 100),
            [GREEN, GREEN, YELLOW, YELLOW],
        ),
        (
            {"width": 150, "height": 40, "crop": "fill", "gravity": "south"},
            (150, 40),
            [BLUE, YELLOW, BLUE, YELLOW],
        ),
        (
            {"width": 240, "height": 200, "crop": "pad", "background": "black"},
            (240, 200),
            [RED, GREEN, BLUE, YELLOW],
        ),
        ({"width": 0.1}, (120, 60), [RED, GREEN, BLUE, YELLOW]),
    ],
)
def test_geometry_is_upright_for_every_orientation(
    orientation: int, step: dict[str, Any], size: tuple[int, int], expected: list[tuple[int, int, int]]
) -> None:
    # Big enough for a reduced-scale decode; the stored image is sideways or mirrored.
    out = _render(oriented_jpeg(orientation, quadrants(1200, 600)), "png", [step])
    assert out.size == size
    w, h = size
    pad = (h - w // 2) // 2 if step.get("crop") == "pad" else 0
    points = [
        (w // 4, pad + h // 8 + 2),
        (3 * w // 4, pad + h // 8 + 2),
        (w // 4, h - pad - h // 8 - 3),
        (3 * w // 4, h - pad - h // 8 - 3),
    ]
    got = [rgb_at(out, p) for p in points]
    assert all(close_to(g, e) for g, e in zip(got, expected, strict=True)), (orientation, got)


def test_avif_orientation_is_applied() -> None:
    stored = quadrants(48, 24).transpose(Image.Transpose.ROTATE_90)
    out = _render(avif(stored, exif=gps_exif(6).tobytes()), "png")
    assert out.size == (48, 24)
    assert close_to(rgb_at(out, (6, 6)), RED) and close_to(rgb_at(out, (42, 18)), YELLOW)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("source", ["jpeg", "webp", "png", "heic", "avif"])
def test_gps_exif_xmp_and_comments_never_survive(source: str, fmt: str) -> None:
    picture, exif = quadrants(), gps_exif(1).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">CanaryPhone secret comment</x:xmpmeta>'
    data = {
        "jpeg": lambda: jpeg(picture, exif=exif, comment=b"secret comment", xmp=xmp),
        "webp": lambda: encoded(picture, "WEBP", exif=exif, xmp=xmp),
        "png": lambda: encoded(picture, "PNG", exif=exif),
        "heic": lambda: heic(picture, exif=exif, xmp=xmp),
        "avif": lambda: avif(picture, exif=exif, xmp=xmp),
    }[source]()
    assert b"CanaryPhone" in data  # the source really carries the metadata
    out = process(data, parse_chain([{"width": 20, "format": fmt}]), {}, LIMITS).main
    assert no_metadata(out.data) == []


SOURCES: dict[str, Callable[[], bytes]] = {
    "cmyk-jpeg": cmyk_jpeg,
    "palette-png-transparent": palette_png_with_transparency,
    "png16-grey": png16_grey,
    "animated-gif": animated_gif,
    "heic": heic,
    "avif": avif,
}


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_awkward_inputs_produce_correct_outputs_in_every_format(source: str, fmt: str) -> None:
    out = _render(SOURCES[source](), fmt)
    if source == "cmyk-jpeg":
        assert out.size == (32, 16)
        assert close_to(rgb_at(out, (4, 8)), RED, 60) and close_to(rgb_at(out, (28, 8)), GREEN, 60)
    elif source == "palette-png-transparent":
        assert out.size == (32, 16)
        assert close_to(rgb_at(out, (28, 8)), RED)
        if fmt == "jpg":  # no alpha: flattened onto white
            assert close_to(rgb_at(out, (4, 8)), WHITE)
        else:
            assert out.mode == "RGBA"
            assert out.getpixel((4, 8))[3] == 0  # type: ignore[index]
            assert out.getpixel((28, 8))[3] == 255  # type: ignore[index]
    elif source == "png16-grey":
        assert close_to(rgb_at(out, (8, 4)), (127, 127, 127), 6)  # 32768/65535, not clipped to white
    elif source == "animated-gif":
        assert out.size == (20, 10)
        assert close_to(rgb_at(out, (10, 5)), RED)  # the first frame
    else:  # heic, avif
        assert out.size == (40, 20)
        expected = [RED, GREEN, BLUE, YELLOW]
        corners = [rgb_at(out, xy) for xy in ((5, 5), (35, 5), (5, 15), (35, 15))]
        assert all(close_to(c, e, 60) for c, e in zip(corners, expected, strict=True)), corners


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_wide_gamut_colours_are_converted_to_srgb_and_untagged(fmt: str) -> None:
    # (200, 100, 50) in P3 primaries is a more saturated (216, 93, 24) in sRGB.
    source = encoded(Image.new("RGBA", (8, 8), (200, 100, 50, 255)), "PNG", icc_profile=wide_gamut_icc())
    out = _render(source, fmt)
    assert close_to(rgb_at(out, (4, 4)), (216, 93, 24), 4 if fmt == "png" else 10)
    assert "icc_profile" not in out.info


def test_an_srgb_profile_changes_nothing_and_a_broken_one_counts_as_srgb() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (srgb, wide_gamut_icc()[:200]):
        out = _render(encoded(Image.new("RGB", (8, 8), (200, 100, 50)), "PNG", icc_profile=icc), "png")
        assert rgb_at(out, (4, 4)) == (200, 100, 50)


HOSTILE = hostile_inputs()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_inputs_are_file_4004(name: str) -> None:
    with pytest.raises(JobError) as info:
        process(HOSTILE[name], parse_chain([{"width": 10}]), {}, LIMITS)
    assert info.value.code == "FILE_4004"
    assert info.value.retry is False


@pytest.fixture(scope="session")
def bomb_400mp() -> bytes:
    """20000x20000 pixels in ~60 KB: twice over Pillow's own hard limit."""
    return png_bomb(20_000, 20_000)


@pytest.fixture(scope="session")
def bomb_100mp() -> bytes:
    """10000x10000: between Pillow's warning threshold (89.5 MP) and its error (179 MP)."""
    return png_bomb(10_000, 10_000)


def test_decompression_bomb_is_refused_before_decoding(bomb_400mp: bytes) -> None:
    assert len(bomb_400mp) < 200_000
    with pytest.raises(JobError) as info:
        decode(bomb_400mp, 60_000_000)
    assert info.value.code == "FILE_4004"


def test_pixel_cap_from_settings_is_checked_from_the_header() -> None:
    with pytest.raises(JobError) as info:
        decode(png_bomb(2000, 1000), 1_999_999)
    assert info.value.code == "FILE_4004"
    assert "2000x1000" in info.value.message and "IMAGE_MAX_PIXELS" in info.value.message
    assert decode(png_bomb(2000, 1000), 2_000_000).size == (2000, 1000)


def test_bomb_warning_is_escalated_to_an_error(bomb_100mp: bytes) -> None:
    # As in a worker: warnings merely printed, plus the filter the image job installs.
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        escalate_bomb_warnings()
        with pytest.raises(JobError) as info:
            decode(bomb_100mp, 80_000_000)
    assert info.value.code == "FILE_4004"
    assert "DecompressionBomb" in info.value.message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
