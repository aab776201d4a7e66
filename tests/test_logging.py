"""Logging: text and JSON formats, level control, configured once per process."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from jobs.logs import configure_logging
from jobs.settings import Settings


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_format(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(Settings.from_mapping({"LOG_FORMAT": "text"}), out)
    logging.getLogger("jobs.images").warning("Retrying image processing job %s", "abc")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[WARN\] jobs\.images: Retrying image processing job abc\n",
        out.getvalue(),
    )


def test_json_format_with_structured_fields(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(Settings.from_mapping({"LOG_FORMAT": "json"}), out)
    logging.getLogger("jobs.email").info("sent", extra={"job_id": "m-1", "attempt": 2})
    record = json.loads(out.getvalue())
    assert record["level"] == "INFO"
    assert record["logger"] == "jobs.email"
    assert record["message"] == "sent"
    assert record["job_id"] == "m-1" and record["attempt"] == 2
    assert "short_level" not in record and "_taatom_sanitized" not in record


@pytest.mark.parametrize(("level", "debug_shown"), [("INFO", False), ("DEBUG", True)])
def test_debug_lines_only_when_asked(root_logger: logging.Logger, level: str, debug_shown: bool) -> None:
    out = io.StringIO()
    configure_logging(Settings.from_mapping({"LOG_LEVEL": level}), out)
    logging.getLogger("jobs.x").debug("detail")
    assert ("detail" in out.getvalue()) is debug_shown


def test_configuring_twice_does_not_duplicate_lines(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    settings = Settings.from_mapping({})
    configure_logging(settings, out)
    configure_logging(settings, out)
    logging.getLogger("jobs.x").warning("once")
    assert out.getvalue().count("once") == 1
