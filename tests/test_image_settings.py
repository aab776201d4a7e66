"""Image settings: defaults, refusals naming the variable, the test-only allowlist; output choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from jobs.images.fetch import FetchPolicy
from jobs.images.pipeline import Limits, process
from jobs.images.steps import parse_chain
from jobs.settings import Settings, SettingsError
from tests.support.images import animated_gif, encoded, heic, jpeg, opened, quadrants

PRODUCTION = {"APP_ENV": "production", "SMTP_HOST": "smtp.example.com", "MONGO_URL": "mongodb://db"}


def test_defaults() -> None:
    s = Settings.from_mapping({"EMBEDDED_DATA_DIR": "/srv/taatom"})
    assert s.image_storage == "file"
    assert s.image_storage_path == Path("/srv/taatom/images")
    assert s.image_public_base_url is None
    policy = FetchPolicy.from_settings(s)
    assert policy.addresses.ports == {80, 443}
    assert policy.addresses.allow_hosts == frozenset()
    assert (policy.max_bytes, policy.timeout_s, policy.max_redirects) == (25 * 1024 * 1024, 20.0, 5)
    assert s.image_max_pixels == 60_000_000


def test_the_allowlist_is_parsed_and_refused_in_production() -> None:
    s = Settings.from_mapping({"IMAGE_FETCH_ALLOW_HOSTS": "127.0.0.1:8123, [::1]:9000,Localhost:80"})
    assert FetchPolicy.from_settings(s).addresses.allow_hosts == {
        ("127.0.0.1", 8123),
        ("::1", 9000),
        ("localhost", 80),
    }
    with pytest.raises(SettingsError, match="IMAGE_FETCH_ALLOW_HOSTS must be empty when APP_ENV=production"):
        Settings.from_mapping({**PRODUCTION, "IMAGE_FETCH_ALLOW_HOSTS": "127.0.0.1:8123"})
    assert Settings.from_mapping({**PRODUCTION, "IMAGE_FETCH_ALLOW_HOSTS": ""}).is_production


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("IMAGE_STORAGE", "s3", "'file' or 'gridfs'"),
        ("IMAGE_PUBLIC_BASE_URL", "ftp://cdn", "http://, https:// or file://"),
        ("IMAGE_GRIDFS_BUCKET", "a/b", "IMAGE_GRIDFS_BUCKET"),
        ("IMAGE_MAX_BYTES", "10", "IMAGE_MAX_BYTES"),
        ("IMAGE_MAX_PIXELS", "100000000", "less than or equal to 80000000"),
        ("IMAGE_MAX_PIXELS", "0", "IMAGE_MAX_PIXELS"),
        ("IMAGE_FETCH_TIMEOUT_S", "0", "IMAGE_FETCH_TIMEOUT_S"),
        ("IMAGE_FETCH_TIMEOUT_S", "600", "shorter than IMAGE_TIME_LIMIT_S"),
        ("IMAGE_MAX_REDIRECTS", "-1", "IMAGE_MAX_REDIRECTS"),
        ("IMAGE_FETCH_PORTS", "80,http", "port numbers"),
        ("IMAGE_FETCH_PORTS", "70000", "port numbers"),
        ("IMAGE_FETCH_ALLOW_HOSTS", "localhost", "not host:port"),
        ("IMAGE_FETCH_ALLOW_HOSTS", "localhost:0", "not host:port"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({name: value})
    assert expected in str(info.value)
    assert name in str(info.value)


LIMITS = Limits(max_pixels=1_000_000)


@pytest.mark.parametrize(
    ("source", "asked", "expected"),
    [
        (jpeg, None, "JPEG"),
        (lambda: encoded(quadrants(), "PNG"), None, "PNG"),
        (lambda: encoded(quadrants(), "WEBP"), None, "WEBP"),
        (heic, None, "JPEG"),  # HEIC does not display in most browsers
        (animated_gif, None, "PNG"),
        (jpeg, "auto", "WEBP"),
        (heic, "avif", "AVIF"),
    ],
)
def test_output_format_choice(source: object, asked: str | None, expected: str) -> None:
    steps = [{"width": 10}] + ([{"format": asked}] if asked else [])
    out = process(source(), parse_chain(steps), {}, LIMITS).main  # type: ignore[operator]
    assert opened(out.data).format == expected


@pytest.mark.parametrize(
    ("quality", "equivalent"), [("auto", 80), ("auto:eco", 70), ("auto:best", 90), (55, 55)]
)
def test_jpeg_quality_mapping(quality: object, equivalent: int) -> None:
    out = process(jpeg(), parse_chain([{"width": 40, "quality": quality, "format": "jpg"}]), {}, LIMITS).main
    reference = encoded(Image.new("RGB", (8, 8)), "JPEG", quality=equivalent)
    assert opened(out.data).quantization == opened(reference).quantization  # type: ignore[attr-defined]
