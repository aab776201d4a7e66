"""The outbox backend: e-mails written as ``.eml`` files, for embedded mode and development.

Used when no ``SMTP_HOST`` is configured (the settings refuse that in
production). Open the files with any mail client, or parse them with
``email.message_from_bytes``. They hold the full message, OTP codes included:
the folder is created readable by its owner only.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..settings import Settings
from .backend import Delivery
from .message import OutgoingEmail


def outbox_dir(settings: Settings) -> Path:
    """``EMAIL_OUTBOX_DIR``, by default ``EMBEDDED_DATA_DIR/outbox``."""
    return settings.email_outbox_dir or settings.embedded_data_dir / "outbox"


def outbox_file_name(email: OutgoingEmail) -> str:
    """``<enqueue time>.<job token>.eml``: sorted by time, and the same file for a repeated job."""
    token = email.message_id.strip("<>").split("@", 1)[0]
    date = email.message["Date"].datetime
    return f"{date:%Y%m%dT%H%M%SZ}.{token}.eml"


class OutboxBackend:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def describe(self) -> str:
        return f"outbox {self.directory}"

    def send(self, email: OutgoingEmail) -> Delivery:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / outbox_file_name(email)
        # Written aside and renamed: a reader never sees half a message.
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        partial.write_bytes(email.as_bytes())
        os.replace(partial, path)
        return Delivery("outbox", None, f"written to {path}", len(email.envelope_to), location=str(path))

    def close(self) -> None:
        """Nothing is held open."""
