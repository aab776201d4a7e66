"""What a backend reports about a message it took, and the interface both backends share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .message import OutgoingEmail


@dataclass(frozen=True)
class Refusal:
    """A recipient the SMTP server refused while accepting the message for others."""

    address: str
    code: int
    reply: str

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "code": self.code, "reply": self.reply}


@dataclass(frozen=True)
class Delivery:
    """A message accepted for delivery: by an SMTP server, or written to the outbox."""

    transport: Literal["smtp", "outbox"]
    # The SMTP server's reply to the message (None for the outbox) and its text,
    # or for the outbox where the file is.
    code: int | None
    reply: str
    accepted: int
    refused: tuple[Refusal, ...] = field(default=())
    location: str | None = None


class Backend(Protocol):
    def send(self, email: OutgoingEmail) -> Delivery:
        """Hand ``email`` over; raise on failure (translated to a code by the policy)."""

    def describe(self) -> str:
        """Where e-mails go, for log lines (never credentials)."""

    def close(self) -> None:
        """Release connections; the backend stays usable (it reconnects)."""


def reply_text(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())[:limit]
