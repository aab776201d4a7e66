"""Build the MIME message of an e-mail job with the standard library.

Text only: one text/plain part. HTML (with or without text): a
multipart/alternative with the text first and the HTML last (the preferred
part); when the job gave only HTML, the text part is derived from it. The
policy is RFC 5322 with CRLF line ends and 7-bit transfer encodings, so the
bytes are valid on any SMTP server, with or without 8BITMIME: non-ASCII
subjects and display names become RFC 2047 encoded words, bodies
quoted-printable or base64.
"""

from __future__ import annotations

import email.policy
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from ..payloads import EmailPayload
from .addresses import Mailbox, parse_mailbox
from .html_text import html_to_text

POLICY = email.policy.SMTP.clone(cte_type="7bit")


@dataclass(frozen=True)
class OutgoingEmail:
    """A message ready to send: its bytes and its SMTP envelope."""

    message: EmailMessage
    message_id: str
    envelope_from: str
    envelope_to: tuple[str, ...]

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=POLICY)


def message_token(job_id: str, idempotency_key: str | None) -> str:
    """The job's identity in the Message-ID and the outbox file name.

    The job id survives retries and redeliveries (they reuse the message); with
    an idempotency key, every job carrying that key shares the token, as they
    share one e-mail. A key may hold personal data, so only its digest is used.
    """
    if idempotency_key is None:
        return job_id
    return "k" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def build_email(payload: EmailPayload, *, sender: Mailbox, token: str, date: datetime) -> OutgoingEmail:
    """The message for ``payload`` from ``sender``.

    ``token`` (see :func:`message_token`) makes the Message-ID, so a message
    sent twice after an ambiguous failure carries the same id and receivers
    can drop the copy; ``date`` is when the job was enqueued (also stable).
    """
    to = [parse_mailbox(v) for v in payload.recipients]
    cc = [parse_mailbox(v) for v in _listed(payload.cc)]
    bcc = [parse_mailbox(v) for v in _listed(payload.bcc)]
    message_id = f"<{token}@{sender.address.rsplit('@', 1)[1]}>"

    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender.header()
    msg["To"] = [m.header() for m in to]
    if cc:
        msg["Cc"] = [m.header() for m in cc]
    if payload.reply_to is not None:
        msg["Reply-To"] = parse_mailbox(payload.reply_to).header()
    msg["Subject"] = payload.subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    # RFC 3834: no vacation or out-of-office replies to an automatic message.
    msg["Auto-Submitted"] = "auto-generated"
    # Bcc recipients travel on the envelope only: no header names them.

    html = payload.html if payload.html and payload.html.strip() else None
    text = payload.text if payload.text and payload.text.strip() else None
    if text is None:
        assert html is not None, "the payload guarantees html or text"
        text = html_to_text(html)
    msg.set_content(text, subtype="plain", charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")

    # One RCPT per mailbox: the local part may be case-sensitive, the duplicate test is not.
    envelope: dict[str, str] = {}
    for mailbox in (*to, *cc, *bcc):
        envelope.setdefault(mailbox.address.lower(), mailbox.address)
    return OutgoingEmail(msg, message_id, sender.address, tuple(envelope.values()))


def _listed(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])
