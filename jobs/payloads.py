"""Payload schemas of the four actors (DESIGN.md, "Queues and payloads").

Payloads are plain JSON keyword arguments. Each schema is checked when a
message is sent (the caller gets a :class:`JobError` with ``VAL_2001`` at
once) and again when a worker processes it. Job issues refine their own
schema; the rules here are the contract every job shares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from middleware.errors import FILE_4001, VAL_2001, JobError

# Control characters (CR/LF above all) in a header value are header injection.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_RECIPIENTS = 50
MAX_BODY_CHARS = 1_000_000
MAX_SUBJECT_CHARS = 998  # RFC 5322 line limit
MAX_URL_CHARS = 2048
MAX_TRANSFORMATION_STEPS = 20


class Payload(BaseModel):
    """Base of every payload: strict JSON types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Fields whose absence means "required data missing" (FILE_4001) rather
    # than a malformed payload (VAL_2001).
    required_data_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(cls, data: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> Self:
        """Validate keyword arguments, translating problems into a :class:`JobError`.

        The error lists each bad field and why, but never the input values:
        they may be the very secrets the payload carries.
        """
        try:
            return cls.model_validate(dict(data), context=dict(context or {}))
        except ValidationError as exc:
            details = [
                {
                    "field": ".".join(str(p) for p in e["loc"]) or "(payload)",
                    "problem": e["msg"].removeprefix("Value error, "),
                }
                for e in exc.errors(include_url=False, include_input=False, include_context=False)
            ]
            missing = {d["field"] for d in details} & cls.required_data_fields
            code = FILE_4001 if missing else VAL_2001
            summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
            raise JobError(code, f"invalid {cls.__name__} payload: {summary}", details=details) from None

    def to_kwargs(self) -> dict[str, Any]:
        """The JSON keyword arguments the message carries."""
        return self.model_dump(mode="json", exclude_none=True)


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters such as CR or LF")
    return value


# --- e-mail (docs/email.md) -------------------------------------------------------
# Caps: recipients across to, cc and bcc together; html and text together, in
# UTF-8 bytes. A transactional e-mail is a few kilobytes; anything near these
# is a mistake, and it would sit in Redis as a job argument.
MAX_EMAIL_RECIPIENTS = MAX_RECIPIENTS
MAX_EMAIL_BODY_BYTES = 256 * 1024

Mailboxes = str | Annotated[list[str], Field(max_length=MAX_EMAIL_RECIPIENTS)]


def _check_mailboxes(value: str | list[str] | None) -> None:
    # Deferred: the mail package is the one place that knows addresses.
    from .mail.addresses import parse_mailbox

    items = [value] if isinstance(value, str) else value or []
    for position, item in enumerate(items, start=1):
        try:
            parse_mailbox(item)
        except ValueError as exc:
            where = f"address {position}" if len(items) > 1 else "address"
            raise ValueError(f"{where} {exc}") from None


def _no_recipient(value: Any) -> bool:
    """``to`` absent, null, blank or empty: missing data (FILE_4001), not a malformed value."""
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


class EmailPayload(Payload):
    """``send_email``: one address or a list in ``to``, a subject, html and/or text.

    Every address is checked by email-validator (``Name <addr>`` allowed); no
    header value may hold a line break or another control character (header
    injection). A missing recipient is ``FILE_4001``; anything else wrong is
    ``VAL_2001``.
    """

    to: Mailboxes
    subject: Annotated[str, Field(max_length=MAX_SUBJECT_CHARS)]
    html: Annotated[str, Field(max_length=MAX_EMAIL_BODY_BYTES)] | None = None
    text: Annotated[str, Field(max_length=MAX_EMAIL_BODY_BYTES)] | None = None
    cc: Mailboxes | None = None
    bcc: Mailboxes | None = None
    reply_to: str | None = None
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.@/-]{1,200}$")] | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> Self:
        # Decided on the input rather than on the error's field: an invalid
        # address in `to` is bad input (VAL_2001), only an absent one is FILE_4001.
        try:
            return super().parse(data, context)
        except JobError as exc:
            if _no_recipient(data.get("to")):
                raise JobError(FILE_4001, exc.message, details=exc.details) from None
            raise

    @field_validator("to", mode="after")
    @classmethod
    def _valid_recipients(cls, value: str | list[str]) -> str | list[str]:
        if _no_recipient(value):
            raise ValueError("at least one recipient is required")
        _check_mailboxes(value)
        return value

    @field_validator("cc", "bcc", "reply_to", mode="after")
    @classmethod
    def _valid_mailboxes(cls, value: str | list[str] | None) -> str | list[str] | None:
        _check_mailboxes(value)
        return value

    @field_validator("subject", mode="after")
    @classmethod
    def _valid_subject(cls, value: str) -> str:
        from .mail.addresses import check_header_value

        if not value.strip():
            raise ValueError("must not be empty")
        return check_header_value(value)

    @field_validator("html", "text", mode="after")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _body_and_caps(self) -> Self:
        if not (self.html or "").strip() and not (self.text or "").strip():
            raise ValueError("html or text is required")
        size = len((self.html or "").encode()) + len((self.text or "").encode())
        if size > MAX_EMAIL_BODY_BYTES:
            raise ValueError(f"html and text together must not exceed {MAX_EMAIL_BODY_BYTES} bytes (UTF-8)")
        count = len(self.recipients) + len(_as_list(self.cc)) + len(_as_list(self.bcc))
        if count > MAX_EMAIL_RECIPIENTS:
            raise ValueError(f"at most {MAX_EMAIL_RECIPIENTS} recipients in to, cc and bcc together")
        return self

    @property
    def recipients(self) -> list[str]:
        """The ``to`` mailboxes as a list."""
        return _as_list(self.to)


TransformationStep = dict[str, Any]


class ImagePayload(Payload):
    """``process_image``: an http(s) ``image_url``, Cloudinary-style steps, optional variants.

    Every step is checked here (unknown keys, types, ranges, impossible combinations:
    docs/images.md), so a bad transformation is refused at send with ``VAL_2001``.
    Whether the URL may be fetched (its addresses, port, redirects) needs DNS and is
    decided by the worker: ``VAL_2001`` there too.
    """

    image_url: Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS)]
    transformations: Annotated[list[TransformationStep], Field(max_length=MAX_TRANSFORMATION_STEPS)]
    variants: (
        dict[str, Annotated[list[TransformationStep], Field(max_length=MAX_TRANSFORMATION_STEPS)]] | None
    ) = None

    @field_validator("image_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        _no_control_characters(value)
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a malformed port
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if not parts.hostname:
            raise ValueError("must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials")
        return value

    @field_validator("transformations", mode="after")
    @classmethod
    def _valid_steps(cls, value: list[TransformationStep]) -> list[TransformationStep]:
        # Deferred: the images package owns the step language. StepError is a ValueError.
        from .images.steps import parse_chain

        parse_chain(value)
        return value

    @field_validator("variants", mode="after")
    @classmethod
    def _valid_variants(
        cls, value: dict[str, list[TransformationStep]] | None
    ) -> dict[str, list[TransformationStep]] | None:
        from .images.steps import parse_variants

        if value is not None:
            parse_variants(value)
        return value


class AnalyticsPayload(Payload):
    """``aggregate_analytics``: a range and a bucket size (``hourly`` or ``daily``).

    ``YYYY-MM-DD`` bounds are whole UTC days, the end day included; ISO-8601
    datetimes are instants, the end excluded (an offset is converted to UTC,
    none means UTC). The range must not be empty or reversed nor, when the
    context carries ``analytics_max_range_days``, longer than that; the job
    checks the maximum again at run time in any case.
    """

    start_date: Annotated[str, Field(min_length=10, max_length=40)]
    end_date: Annotated[str, Field(min_length=10, max_length=40)]
    aggregation_type: Literal["hourly", "daily"]

    @field_validator("start_date", "end_date", mode="after")
    @classmethod
    def _date_or_datetime(cls, value: str) -> str:
        # Deferred: the analytics package owns the range rules.
        from .analytics.ranges import parse_bound

        parse_bound(value, end=False)
        return value

    @model_validator(mode="after")
    def _usable_range(self, info: Any) -> Self:
        from .analytics.ranges import requested_range

        max_days = (info.context or {}).get("analytics_max_range_days")
        requested_range(self.start_date, self.end_date, max_days=None if max_days is None else int(max_days))
        return self


# A cutoff further back than this is a typo, and far enough to overflow dates.
MAX_OLDER_THAN_DAYS = 36_500


class CleanupPayload(Payload):
    """``cleanup``: what to delete and how old it must be; ``dry_run`` only counts.

    ``older_than_days`` is a JSON integer (not a float, not a boolean) from
    ``CLEANUP_MIN_OLDER_THAN_DAYS`` (given in the context, 7 without one) to
    100 years, so a typo cannot wipe recent data.
    """

    cleanup_type: Literal["analytics", "error_logs", "all"]
    older_than_days: Annotated[StrictInt, Field(le=MAX_OLDER_THAN_DAYS)]
    dry_run: StrictBool = False

    @field_validator("older_than_days", mode="after")
    @classmethod
    def _not_too_recent(cls, value: int, info: Any) -> int:
        minimum = int((info.context or {}).get("cleanup_min_older_than_days", 7))
        if value < minimum:
            raise ValueError(f"must be at least {minimum} (CLEANUP_MIN_OLDER_THAN_DAYS)")
        return value
