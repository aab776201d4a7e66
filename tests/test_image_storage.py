"""Content-addressed keys and atomic writes, to a directory and to GridFS (SecantusDB)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from gridfs import GridFSBucket
from pymongo.database import Database

from jobs.images.encode import Encoded
from jobs.images.steps import parse_chain
from jobs.images.storage import FileStore, GridFSStore, image_key


def _image(data: bytes, fmt: str = "jpg") -> Encoded:
    return Encoded(data, fmt, 10, 10)  # type: ignore[arg-type]


def test_keys_depend_on_source_steps_and_format_only() -> None:
    url = "https://cdn.example/u/1.heic"
    a = image_key(url, parse_chain([{"width": 100}]), _image(b"x"))
    assert a == image_key(url, parse_chain([{"width": 100, "crop": "scale"}]), _image(b"other bytes"))
    assert a != image_key(url, parse_chain([{"width": 101}]), _image(b"x"))
    assert a != image_key(url + "?v=2", parse_chain([{"width": 100}]), _image(b"x"))
    webp = image_key(url, parse_chain([{"width": 100}]), _image(b"x", "webp"))
    assert webp.endswith(".webp") and webp[:-5] == a[:-4]
    assert a[:2] == a.split("/")[1][:2] and len(a.split("/")[1]) == 24 + 4


def test_file_store_overwrites_atomically(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "images", "https://img.taatom.app/p/")
    url = store.put("ab/abcdef.jpg", _image(b"first"))
    assert url == "https://img.taatom.app/p/ab/abcdef.jpg"
    store.put("ab/abcdef.jpg", _image(b"second"))
    target = tmp_path / "images" / "ab" / "abcdef.jpg"
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["abcdef.jpg"]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o644


def test_default_public_url_is_the_file_url(tmp_path: Path) -> None:
    url = FileStore(tmp_path).put("cd/cdef.png", _image(b"png", "png"))
    assert url == (tmp_path / "cd" / "cdef.png").resolve().as_uri()


def test_readers_never_see_a_half_written_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    contents = (b"A" * 400_000, b"B" * 600_000)
    target = tmp_path / "ef" / "efef.jpg"
    store.put("ef/efef.jpg", _image(contents[0]))
    stop = threading.Event()
    seen: set[int] = set()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            seen.add(len(data))
            if data not in contents:
                bad.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        store.put("ef/efef.jpg", _image(contents[i % 2]))
    stop.set()
    thread.join()
    assert bad == []
    assert seen <= {len(c) for c in contents}


def test_gridfs_store_keeps_one_complete_revision(mongo_db: Database[dict[str, Any]]) -> None:
    store = GridFSStore(lambda: mongo_db, "processed")
    key = "12/1234.webp"
    assert store.put(key, Encoded(b"one", "webp", 3, 2)) == "gridfs://processed/12/1234.webp"
    store.put(key, Encoded(b"two!", "webp", 4, 2))
    files = list(mongo_db["processed.files"].find({"filename": key}))
    assert len(files) == 1
    assert files[0]["metadata"] == {"contentType": "image/webp", "width": 4, "height": 2}
    assert GridFSBucket(mongo_db, "processed").open_download_stream_by_name(key).read() == b"two!"
    assert mongo_db["processed.chunks"].count_documents({}) == 1  # the old revision's chunks are gone
