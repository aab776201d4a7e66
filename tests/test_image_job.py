"""process_image end to end: embedded stack, real local HTTP server, files and GridFS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from pymongo.database import Database

from jobs.actors import declare_actors
from jobs.api import JobsAPI
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.wiring import build_broker
from middleware.errors import JobError
from tests.conftest import FAST_POLICY, Stack
from tests.services.http import HTTPTestServer, running_http_server
from tests.support.images import (
    hostile_inputs,
    jpeg,
    no_metadata,
    opened,
    oriented_jpeg,
    png_bomb,
    quadrants,
    rss_mib,
)
from tests.support.redis_inspect import dead_letters, wait_until

SEED = [{"width": 1080, "height": 1080, "crop": "limit"}]


@pytest.fixture(scope="module")
def http_server() -> Iterator[HTTPTestServer]:
    """One server for the module (routes are per test path); overrides the per-test fixture."""
    with running_http_server() as server:
        yield server


@pytest.fixture(scope="module")
def image_env(http_server: HTTPTestServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp_path = tmp_path_factory.mktemp("image-job")
    return {
        "EMBEDDED_DATA_DIR": str(tmp_path / "data"),
        "IMAGE_STORAGE_DIR": str(tmp_path / "images"),
        "IMAGE_FETCH_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}",
        "IMAGE_FETCH_TIMEOUT_S": "3",
        **FAST_POLICY,
    }


@pytest.fixture(scope="module")
def stacks() -> Iterator[Callable[[dict[str, str]], Stack]]:
    """Stacks for the whole module: stopping an embedded worker takes ~2 s, so build few."""
    built: list[Stack] = []

    def make(env: dict[str, str]) -> Stack:
        settings = Settings.from_mapping(env)
        broker = build_broker(settings)
        runtime = Runtime(settings)
        stack = Stack(
            settings, broker, declare_actors(broker, settings, runtime), runtime, JobsAPI(broker, settings)
        )
        built.append(stack)
        return stack

    yield make
    for stack in built:
        if stack.embedded is not None:
            stack.embedded.stop()
        stack.broker.close()
        stack.runtime.close()


@pytest.fixture(scope="module")
def stack(stacks: Callable[[dict[str, str]], Stack], image_env: dict[str, str]) -> Stack:
    return stacks(image_env)


def _run(stack: Stack, **kwargs: Any) -> dict[str, Any]:
    job = stack.actors.process_image.send(**kwargs).message_id
    result = stack.api.result(job, timeout=30)
    assert isinstance(result, dict)
    return result


def _fails(stack: Stack, code: str, **kwargs: Any) -> dict[str, Any]:
    job = stack.actors.process_image.send(**kwargs).message_id
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=30)
    assert info.value.code == code, info.value.message
    status = stack.api.status(job)
    assert status is not None and status["error_code"] == code
    return status


def _stored(stack: Stack, url: str) -> bytes:
    """The file behind a processed_url: embedded mode's default is the file:// URL."""
    directory = stack.settings.image_storage_path.resolve()
    assert url.startswith(directory.as_uri() + "/"), url
    return Path(unquote(urlsplit(url).path)).read_bytes()


def test_the_seed_thumbnail_end_to_end(stack: Stack, http_server: HTTPTestServer) -> None:
    # A phone photo stored sideways (EXIF orientation 6) with GPS tags.
    url = http_server.add_bytes("/u/1.jpg", oriented_jpeg(6, quadrants(1600, 1200)), "image/jpeg")
    result = _run(stack, image_url=url, transformations=SEED)
    stored = _stored(stack, result["processed_url"])
    assert result == {
        "success": True,
        "processed_url": result["processed_url"],
        "width": 1080,
        "height": 810,
        "format": "jpg",
        "bytes": len(stored),
    }
    image = opened(stored)
    assert image.size == (1080, 810)
    assert no_metadata(stored) == []


def test_variants_come_from_one_download(stack: Stack, http_server: HTTPTestServer) -> None:
    url = http_server.add_bytes("/u/2.jpg", jpeg(quadrants(1200, 800)))
    result = _run(
        stack,
        image_url=url,
        transformations=SEED,
        variants={
            "thumb": [{"width": 150, "height": 150, "crop": "thumb", "fetch_format": "auto"}],
            "medium": [{"width": 600, "crop": "limit", "quality": "auto:eco"}],
        },
    )
    assert (result["width"], result["height"]) == (1080, 720)
    thumb, medium = result["variants"]["thumb"], result["variants"]["medium"]
    assert (thumb["width"], thumb["height"], thumb["format"]) == (150, 150, "webp")
    assert (medium["width"], medium["height"], medium["format"]) == (600, 400, "jpg")
    assert opened(_stored(stack, thumb["processed_url"])).format == "WEBP"
    assert len({result["processed_url"], thumb["processed_url"], medium["processed_url"]}) == 3
    assert len(http_server.requests_to("/u/2.jpg")) == 1


def test_a_repeat_overwrites_instead_of_duplicating(stack: Stack, http_server: HTTPTestServer) -> None:
    url = http_server.add_bytes("/u/3.png", jpeg(quadrants(300, 200)))
    first = _run(stack, image_url=url, transformations=[{"width": 100}])
    before = sorted(p for p in stack.settings.image_storage_path.rglob("*") if p.is_file())
    second = _run(stack, image_url=url, transformations=[{"width": 100, "crop": "scale"}])
    assert first["processed_url"] == second["processed_url"]
    assert sorted(p for p in stack.settings.image_storage_path.rglob("*") if p.is_file()) == before


def test_hostile_files_fail_permanently_and_the_worker_survives(
    stack: Stack, http_server: HTTPTestServer
) -> None:
    good = http_server.add_bytes("/good.jpg", jpeg(quadrants(400, 300)))
    _run(stack, image_url=good, transformations=SEED)  # warm up: codecs loaded, threads started
    baseline = rss_mib()
    inputs = {**hostile_inputs(), "bomb-400mp": png_bomb(20_000, 20_000)}
    for name, data in inputs.items():
        url = http_server.add_bytes(f"/hostile/{name}", data, "image/jpeg")
        status = _fails(stack, "FILE_4004", image_url=url, transformations=SEED)
        assert status["attempts"] == 1, name  # never retried

    def letters() -> list[dict[str, Any]]:
        return dead_letters(stack.broker.client, stack.broker.namespace, "image-processing")

    assert wait_until(lambda: len(letters()) == len(inputs), timeout=10)
    assert {letter["options"]["error_code"] for letter in letters()} == {"FILE_4004"}
    # The same worker still works, and memory did not follow the bombs' declared sizes.
    assert _run(stack, image_url=good, transformations=[{"width": 50}])["width"] == 50
    assert rss_mib() - baseline < 150


def test_source_errors_carry_their_codes(stack: Stack, http_server: HTTPTestServer) -> None:
    assert (
        _fails(stack, "FILE_4001", image_url=http_server.add_status("/gone", 404), transformations=SEED)[
            "attempts"
        ]
        == 1
    )
    assert (
        _fails(stack, "SRV_6003", image_url=http_server.add_status("/down", 503), transformations=SEED)[
            "attempts"
        ]
        == 3
    )
    assert len(http_server.requests_to("/down")) == 3
    blocked = _fails(
        stack, "VAL_2001", image_url="http://169.254.169.254/latest/meta-data/", transformations=SEED
    )
    assert blocked["attempts"] == 1
    local = _fails(
        stack, "VAL_2001", image_url=f"http://localhost:{http_server.port}/good.jpg", transformations=SEED
    )
    assert local["attempts"] == 1


def test_an_oversized_output_is_refused_by_the_worker(stack: Stack, http_server: HTTPTestServer) -> None:
    url = http_server.add_bytes("/small.jpg", jpeg(quadrants(40, 20)))
    status = _fails(stack, "VAL_2001", image_url=url, transformations=[{"width": 16000, "height": 16000}])
    assert status["attempts"] == 1


def test_gridfs_storage(
    stacks: Callable[[dict[str, str]], Stack],
    image_env: dict[str, str],
    http_server: HTTPTestServer,
    mongo_url: str,
    mongo_db: Database[dict[str, Any]],
) -> None:
    env = {**image_env, "IMAGE_STORAGE": "gridfs", "MONGO_URL": mongo_url, "MONGO_DB": mongo_db.name}
    stack = stacks(env)
    url = http_server.add_bytes("/u/4.jpg", jpeg(quadrants(400, 200)))
    result = _run(stack, image_url=url, transformations=[{"width": 200, "format": "png"}])
    key = result["processed_url"].removeprefix("gridfs://images/")
    assert result["processed_url"].startswith("gridfs://images/") and key.endswith(".png")
    [document] = mongo_db["images.files"].find({"filename": key})
    assert document["length"] == result["bytes"]
    assert document["metadata"] == {"contentType": "image/png", "width": 200, "height": 100}
