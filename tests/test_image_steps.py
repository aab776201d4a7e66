"""The step language: what is accepted, how it is normalised, and every refusal being VAL_2001."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.images.steps import Step, StepError, parse_chain, parse_variants
from middleware.errors import JobError
from tests.conftest import Stack


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"width": 1080, "height": 1080, "crop": "limit"}, Step(width=1080, height=1080, crop="limit")),
        ({"width": 0.5}, Step(width=0.5)),
        ({"width": 1.0}, Step(width=1.0)),
        (
            {"height": 200, "aspect_ratio": "16:9", "crop": "fill"},
            Step(height=200, aspect_ratio=16 / 9, crop="fill"),
        ),
        ({"aspect_ratio": 1.5, "crop": "pad"}, Step(aspect_ratio=1.5, crop="pad")),
        ({"aspect_ratio": "0.75", "crop": "crop"}, Step(aspect_ratio=0.75, crop="crop")),
        ({"width": 10, "crop": "crop", "x": 5, "y": 0.25}, Step(width=10, crop="crop", x=5, y=0.25)),
        (
            {"width": 10, "height": 10, "crop": "pad", "background": "#f00"},
            Step(10, 10, "pad", background=(255, 0, 0, 255)),
        ),
        (
            {"width": 10, "crop": "lpad", "background": "rgb:00ff0080"},
            Step(10, crop="lpad", background=(0, 255, 0, 128)),
        ),
        (
            {"width": 10, "crop": "mpad", "background": "teal"},
            Step(10, crop="mpad", background=(0, 128, 128, 255)),
        ),
        (
            {"width": 10, "crop": "pad", "background": "transparent"},
            Step(10, crop="pad", background=(255, 255, 255, 0)),
        ),
        ({"angle": -90}, Step(angle=270)),
        ({"angle": 360}, Step(angle=0)),
        ({"angle": 30, "background": "black"}, Step(angle=30, background=(0, 0, 0, 255))),
        ({"angle": "hflip"}, Step(angle="hflip")),
        ({"quality": "auto:eco", "format": "jpeg"}, Step(quality="auto:eco", format="jpg")),
        ({"fetch_format": "auto"}, Step(format="auto")),
        ({"format": "webp", "fetch_format": "webp"}, Step(format="webp")),
        (
            {"width": 100, "crop": "thumb", "gravity": "south_east"},
            Step(width=100, crop="thumb", gravity="south_east"),
        ),
    ],
)
def test_accepted_steps_are_normalised(raw: dict[str, Any], expected: Step) -> None:
    assert parse_chain([raw]) == (expected,)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"w": 100}, "unknown key 'w'"),
        ({}, "empty step"),
        ({"width": True}, "not true or false"),
        ({"height": False}, "not true or false"),
        ({"width": 0}, "between 1 and"),
        ({"width": -5}, "between 1 and"),
        ({"width": 100_000}, "between 1 and"),
        ({"width": 1.5}, "fraction of the input in (0, 1]"),
        ({"width": 0.0}, "fraction of the input in (0, 1]"),
        ({"width": "100"}, "must be a number"),
        ({"crop": "squash", "width": 1}, "must be one of"),
        ({"crop": "fill"}, "needs width, height or aspect_ratio"),
        ({"crop": "fill_pad", "width": 1}, "content detection"),
        ({"width": 10, "crop": "fill", "gravity": "auto"}, "face or content detection"),
        ({"width": 10, "crop": "fill", "gravity": "faces"}, "face or content detection"),
        ({"width": 10, "crop": "fill", "gravity": "up"}, "must be one of"),
        ({"width": 10, "gravity": "north"}, "no effect with crop 'scale'"),
        ({"width": 10, "crop": "limit", "gravity": "north"}, "no effect with crop 'limit'"),
        ({"width": 10, "crop": "fill", "x": 3}, "x and y apply to crop 'crop' only"),
        ({"width": 10, "crop": "crop", "x": 1.5}, "[-1, 1]"),
        ({"width": 10, "height": 10, "aspect_ratio": 1}, "at most two"),
        ({"aspect_ratio": "16:9"}, "aspect_ratio alone"),
        ({"aspect_ratio": "1:0", "crop": "fill"}, "positive"),
        ({"aspect_ratio": "wide", "crop": "fill"}, "width:height"),
        ({"aspect_ratio": 1000, "crop": "fill"}, "between"),
        ({"width": 10, "background": "red"}, "background applies to pad"),
        ({"width": 10, "crop": "pad", "background": "#12"}, "colour name"),
        ({"width": 10, "crop": "pad", "background": "notacolour"}, "colour name"),
        ({"angle": 45.5}, "whole degrees"),
        ({"angle": 720}, "whole degrees"),
        ({"angle": "auto_right"}, "not supported"),
        ({"angle": 90, "background": "red"}, "background applies to pad"),
        ({"quality": 0}, "1 to 100"),
        ({"quality": 101}, "1 to 100"),
        ({"quality": "best"}, "1 to 100"),
        ({"quality": True}, "not true or false"),
        ({"format": "gif"}, "must be one of"),
        ({"format": "heic"}, "must be one of"),
        ({"format": "png", "fetch_format": "jpg"}, "disagree"),
        ({"format": "png", "quality": 80}, "png output is lossless"),
    ],
)
def test_refused_steps_say_why(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(StepError) as info:
        parse_chain([{"width": 50}, raw])
    assert problem in str(info.value)
    assert "transformations[2]" in str(info.value) or "transformations:" in str(info.value)


def test_a_later_format_overrides_and_png_quality_is_checked_across_the_chain() -> None:
    with pytest.raises(StepError, match="lossless"):
        parse_chain([{"quality": 70}, {"format": "png"}])
    assert parse_chain([{"format": "png"}, {"quality": 70, "format": "jpg"}])[1].format == "jpg"


def test_canonical_form_ignores_spelling_differences() -> None:
    a = parse_chain([{"width": 100}, {"format": "jpeg", "background": "#FF0000", "crop": "pad", "height": 5}])
    b = parse_chain(
        [
            {"width": 100, "crop": "scale"},
            {"height": 5, "crop": "pad", "fetch_format": "jpg", "background": "red"},
        ]
    )
    assert [s.canonical() for s in a] == [s.canonical() for s in b]


def test_variants_are_named_and_counted() -> None:
    chains = parse_variants({"thumb": [{"width": 150, "height": 150, "crop": "thumb"}], "full": []})
    assert chains["thumb"][0].crop == "thumb" and chains["full"] == ()
    with pytest.raises(StepError, match="variant name"):
        parse_variants({"Big Thumb": []})
    with pytest.raises(StepError, match="at most 8"):
        parse_variants({f"v{i}": [] for i in range(9)})
    with pytest.raises(StepError, match=r"variants\.thumb\[1\]\.width"):
        parse_variants({"thumb": [{"width": -1}]})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"image_url": "https://x.example/a.jpg", "transformations": [{"width": 10, "gravity": "face"}]},
            "transformations",
        ),
        ({"image_url": "https://x.example/a.jpg", "transformations": [{"widht": 10}]}, "transformations"),
        (
            {
                "image_url": "https://x.example/a.jpg",
                "transformations": [],
                "variants": {"t": [{"crop": "x"}]},
            },
            "variants",
        ),
        ({"image_url": "https://user:pw@x.example/a.jpg", "transformations": []}, "image_url"),
        ({"image_url": "https://x.example:99999/a.jpg", "transformations": []}, "image_url"),
        ({"image_url": "file:///etc/passwd", "transformations": []}, "image_url"),
        ({"image_url": "https:///a.jpg", "transformations": []}, "image_url"),
    ],
)
def test_bad_image_payload_is_refused_at_send(
    embedded_stack: Stack, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(JobError) as info:
        embedded_stack.actors.process_image.send(**kwargs)
    assert info.value.code == "VAL_2001"
    assert field in [d["field"] for d in info.value.details]
    assert "pw" not in str(info.value)
    assert embedded_stack.broker.do_qsize("image-processing") == 0
