"""Mailboxes: ``addr@example.com`` or ``Display Name <addr@example.com>``.

The address itself is checked by ``email-validator`` (syntax only: no DNS
lookup at send time; the SMTP server is the judge of deliverability). The
display name is split off here, because email-validator refuses unquoted
non-ASCII names ("Zoë <zoe@example.com>") that apps routinely send; the
header is later written by the standard library, which quotes and encodes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address

from email_validator import EmailNotValidError, validate_email

MAX_DISPLAY_NAME_CHARS = 200
MAX_MAILBOX_CHARS = 512

# Anything that can end a header line or hide in one: ASCII controls (CR, LF,
# TAB, NUL...), DEL, the C1 controls (NEL among them) and the Unicode line and
# paragraph separators. A header value holding one is an injection attempt.
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_header_value(value: str) -> str:
    """Return ``value`` unchanged, or raise ValueError if it could break out of its header line."""
    if _HEADER_UNSAFE.search(value):
        raise ValueError("must not contain line breaks or other control characters")
    return value


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A validated mailbox.

    ``address`` is the ASCII form (an internationalised domain in punycode):
    what goes on the SMTP envelope and in the header.
    """

    address: str
    display_name: str = ""

    def header(self) -> Address:
        return Address(display_name=self.display_name, addr_spec=self.address)


def parse_mailbox(value: str) -> Mailbox:
    """Parse and validate one mailbox; raise ValueError with a reason that never repeats the value."""
    check_header_value(value)
    if len(value) > MAX_MAILBOX_CHARS:
        raise ValueError(f"is longer than {MAX_MAILBOX_CHARS} characters")
    text = value.strip()
    name, addr = "", text
    if text.endswith(">"):
        start = text.rfind("<")
        if start < 0:
            raise ValueError("has a '>' without a matching '<'")
        name, addr = _unquote(text[:start].strip()), text[start + 1 : -1].strip()
        if "<" in name or ">" in name:
            raise ValueError("display name must not contain '<' or '>'")
        if len(name) > MAX_DISPLAY_NAME_CHARS:
            raise ValueError(f"display name is longer than {MAX_DISPLAY_NAME_CHARS} characters")
    try:
        valid = validate_email(addr, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid e-mail address ({exc})") from None
    return Mailbox(address=valid.ascii_email or valid.normalized, display_name=name)


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name
