"""Where outputs go: a directory or a GridFS bucket, under content-addressed keys, atomically.

A key is a hash of the source URL and the normalised steps (plus the pipeline version),
so a retry or a repeat of the same job overwrites its earlier output instead of adding
a copy. Writes are atomic: a reader sees the previous complete file or the new complete
file, never a partial one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from gridfs import GridFSBucket
from pymongo.database import Database

from .encode import Encoded
from .steps import Step

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..settings import Settings

# Bump when the same steps would render differently, so new outputs get new keys.
PIPELINE_VERSION: Final = 1


def image_key(source_url: str, steps: Sequence[Step], image: Encoded) -> str:
    """``ab/ab12...ef.webp``: 24 hex digits (96 bits), the first two fanning the directory out."""
    identity = json.dumps(
        {"v": PIPELINE_VERSION, "source": source_url, "steps": [s.canonical() for s in steps]},
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"{digest[:2]}/{digest}.{image.format}"


class ImageStore(Protocol):
    def put(self, key: str, image: Encoded) -> str:
        """Store ``image`` under ``key`` (replacing what was there); return its public URL."""
        ...


class FileStore:
    """A directory; ``processed_url`` = ``public_base_url`` + key (default: a file:// URL)."""

    def __init__(self, directory: Path, public_base_url: str | None = None) -> None:
        self.directory = directory
        self.base_url = public_base_url or directory.resolve().as_uri()

    def put(self, key: str, image: Encoded) -> str:
        target = self.directory / key
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same directory, so the rename is atomic; the dot keeps it out of listings.
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        done = False
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(image.data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a web server
            os.replace(temporary, target)
            done = True
        finally:
            if not done:
                Path(temporary).unlink(missing_ok=True)
        _fsync_directory(target.parent)
        return _join(self.base_url, key)


class GridFSStore:
    """A GridFS bucket; the file name is the key, the content type and size are metadata.

    A new revision becomes visible only once all its chunks are written (GridFS inserts
    the files document last); older revisions of the key are deleted after that.
    """

    def __init__(
        self,
        database: Callable[[], Database[dict[str, Any]]],
        bucket: str,
        public_base_url: str | None = None,
    ) -> None:
        self._database = database
        self.bucket = bucket
        self.base_url = public_base_url or f"gridfs://{bucket}"

    def put(self, key: str, image: Encoded) -> str:
        database = self._database()
        bucket = GridFSBucket(database, bucket_name=self.bucket)
        file_id = bucket.upload_from_stream(
            key,
            image.data,
            metadata={"contentType": image.content_type, "width": image.width, "height": image.height},
        )
        # Only revisions older than ours: of two concurrent writers, the newer one survives.
        older = database[f"{self.bucket}.files"].find({"filename": key, "_id": {"$lt": file_id}}, {"_id": 1})
        for document in list(older):
            bucket.delete(document["_id"])
        return _join(self.base_url, key)


def open_store(settings: Settings, runtime: Runtime) -> ImageStore:
    if settings.image_storage == "gridfs":
        return GridFSStore(runtime.mongo_db, settings.image_gridfs_bucket, settings.image_public_base_url)
    return FileStore(settings.image_storage_path, settings.image_public_base_url)


def _join(base: str, key: str) -> str:
    return f"{base.rstrip('/')}/{key}"


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows it, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
