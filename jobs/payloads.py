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


HeaderText = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
Address = Annotated[str, Field(min_length=3, max_length=320)]


class EmailPayload(Payload):
    to: Address | list[Address]
    subject: HeaderText
    html: Annotated[str, Field(max_length=MAX_BODY_CHARS)] | None = None
    text: Annotated[str, Field(max_length=MAX_BODY_CHARS)] | None = None
    cc: list[Address] | None = None
    bcc: list[Address] | None = None
    reply_to: Address | None = None
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.@/-]{1,200}$")] | None = None

    required_data_fields: ClassVar[frozenset[str]] = frozenset({"to"})

    @field_validator("to", mode="after")
    @classmethod
    def _some_recipient(cls, value: str | list[str]) -> str | list[str]:
        recipients = [value] if isinstance(value, str) else value
        if not recipients:
            raise ValueError("at least one recipient is required")
        if len(recipients) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
        for address in recipients:
            _no_control_characters(address)
        return value

    @field_validator("subject", "reply_to", mode="after")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        return None if value is None else _no_control_characters(value)

    @field_validator("cc", "bcc", mode="after")
    @classmethod
    def _header_safe_list(cls, value: list[str] | None) -> list[str] | None:
        for address in value or []:
            _no_control_characters(address)
        return value

    @model_validator(mode="after")
    def _some_body(self) -> Self:
        if self.html is None and self.text is None:
            raise ValueError("html or text is required")
        return self

    @property
    def recipients(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)


TransformationStep = dict[str, Any]


class ImagePayload(Payload):
    image_url: Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS)]
    transformations: Annotated[list[TransformationStep], Field(max_length=MAX_TRANSFORMATION_STEPS)]
    variants: (
        dict[str, Annotated[list[TransformationStep], Field(max_length=MAX_TRANSFORMATION_STEPS)]] | None
    ) = None

    @field_validator("image_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return _no_control_characters(value)


class AnalyticsPayload(Payload):
    start_date: Annotated[str, Field(min_length=10, max_length=40)]
    end_date: Annotated[str, Field(min_length=10, max_length=40)]
    aggregation_type: Literal["hourly", "daily"]


class CleanupPayload(Payload):
    cleanup_type: Literal["analytics", "error_logs", "all"]
    older_than_days: StrictInt
    dry_run: StrictBool = False

    @field_validator("older_than_days", mode="after")
    @classmethod
    def _not_too_recent(cls, value: int, info: Any) -> int:
        minimum = int((info.context or {}).get("cleanup_min_older_than_days", 7))
        if value < minimum:
            raise ValueError(f"must be at least {minimum} (CLEANUP_MIN_OLDER_THAN_DAYS)")
        return value
