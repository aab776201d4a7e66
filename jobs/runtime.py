"""Connections the jobs use, opened lazily on first use and shared per process.

In real mode MongoDB is ``MONGO_URL``. In embedded mode (development, the demo)
it is an in-process SecantusDB server storing under ``EMBEDDED_DATA_DIR``:
a development dependency only (``pip install taatom-jobs[embedded]``).
"""

from __future__ import annotations

import threading
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from .settings import Settings

MongoDocument = dict[str, Any]


class Runtime:
    """Holds the process's shared clients for one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._mongo: MongoClient[MongoDocument] | None = None
        self._embedded_server: Any = None

    def mongo_url(self) -> str:
        if self.settings.mongo_url is not None:
            return self.settings.mongo_url.get_secret_value()
        if self.settings.real_mode:
            # Validated settings only allow this outside production.
            return "mongodb://127.0.0.1:27017"
        return self._start_embedded_mongo()

    def mongo_db(self) -> Database[MongoDocument]:
        with self._lock:
            if self._mongo is None:
                url = self.mongo_url()
                self._mongo = MongoClient(
                    url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, tz_aware=True
                )
            return self._mongo[self.settings.mongo_db]

    def _start_embedded_mongo(self) -> str:
        if self._embedded_server is None:
            try:
                from secantus.server import SecantusDBServer
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError(
                    "embedded mode needs the embedded MongoDB-compatible store: "
                    "pip install 'taatom-jobs[embedded]', or set MONGO_URL"
                ) from exc
            path = self.settings.embedded_data_dir / "mongo"
            path.mkdir(parents=True, exist_ok=True)
            server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(path), replica_set_name=None)
            server.start()
            self._embedded_server = server
        return f"mongodb://127.0.0.1:{self._embedded_server.port}/?directConnection=true"

    def close(self) -> None:
        with self._lock:
            if self._mongo is not None:
                self._mongo.close()
                self._mongo = None
            if self._embedded_server is not None:
                self._embedded_server.stop()
                self._embedded_server = None
