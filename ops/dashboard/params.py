"""Request parameters, validated before they reach Redis."""

from __future__ import annotations

import re
from typing import get_args

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ops.inspect import MessageKind

KINDS: tuple[MessageKind, ...] = get_args(MessageKind)
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_REDIS_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def queue(request: Request, known: tuple[str, ...]) -> str:
    name = str(request.path_params["queue"])
    if name not in known:
        raise HTTPException(404, f"No queue named {name!r}; known: {', '.join(known)}.")
    return name


def kind(request: Request) -> MessageKind:
    value = request.query_params.get("kind", "waiting")
    for k in KINDS:
        if value == k:
            return k
    raise HTTPException(400, f"kind must be one of {', '.join(KINDS)}.")


def job_id(value: str) -> str:
    value = value.strip()
    if not _JOB_ID.match(value):
        raise HTTPException(404, "No job with that id.")
    return value


def redis_id(request: Request) -> str:
    value = str(request.path_params["redis_id"])
    if not _REDIS_ID.match(value):
        raise HTTPException(404, "No dead letter with that id.")
    return value


def integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number.") from None
    return min(high, max(low, value))
