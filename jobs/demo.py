"""`python -m jobs demo`: sample jobs through the full stack in embedded mode.

It needs no Redis, MongoDB or SMTP server; every actor runs once with good
input and once with bad input, and the table shows each outcome.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from middleware.errors import JobError
from middleware.job_state import ResultTimeout

from .actor import JobActor
from .actors import Actors, declare_actors
from .api import JobsAPI
from .logs import configure_logging
from .runtime import Runtime
from .settings import Settings
from .wiring import build_broker, embedded_worker


@dataclass
class Outcome:
    job: str
    queue: str
    message_id: str | None = None
    state: str = "queued"
    attempts: int = 0
    duration_ms: float | None = None
    detail: str = ""

    def settle(self, api: JobsAPI, deadline: float) -> None:
        """Wait for the job through the job-state API, as the app would, and note what happened."""
        if self.message_id is None:
            return
        try:
            self.detail = _short(api.result(self.message_id, timeout=max(0.1, deadline - time.monotonic())))
        except JobError as exc:
            self.detail = _error(exc)
        except ResultTimeout:
            self.detail = "still running when the demo stopped waiting"
        status = api.status(self.message_id) or {}
        self.state = str(status.get("state") or self.state)
        self.attempts = int(status.get("attempts") or 0)
        started, finished = status.get("started_at"), status.get("finished_at")
        if started is not None and finished is not None:
            self.duration_ms = (finished - started).total_seconds() * 1000


def _error(exc: BaseException) -> str:
    return f"{exc.code}: {exc.message}" if isinstance(exc, JobError) else type(exc).__name__


def _short(result: Any, limit: int = 70) -> str:
    text = repr(result)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_demo_image_server: list[str] = []


def demo_image_url() -> str:
    """The demo's sample photo, served by a small HTTP server on 127.0.0.1 (started once).

    Embedded mode needs no network, so the demo generates a phone-like photo (2400x1800,
    stored sideways with EXIF orientation 6 and GPS tags) and serves it itself. The image
    job's SSRF guard refuses loopback addresses unless IMAGE_FETCH_ALLOW_HOSTS admits
    this server's ``127.0.0.1:port``, which the demo's settings must then carry.
    """
    if not _demo_image_server:
        import io
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from PIL import Image

        gradient = Image.linear_gradient("L").resize((2400, 1800))
        photo = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))
        exif = Image.Exif()
        exif[0x0112] = 6  # the phone was held upright: stored sideways
        exif[0x8825] = {1: "N", 2: (38.0, 42.0, 7.0), 3: "W", 4: (9.0, 8.0, 21.0)}
        buffer = io.BytesIO()
        photo.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=90, exif=exif.tobytes())
        body = buffer.getvalue()

        class Photo(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo prints its own table."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Photo)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="demo-image-server", daemon=True).start()
        _demo_image_server.append(f"http://127.0.0.1:{server.server_address[1]}/demo/trip-photo.jpg")
    return _demo_image_server[0]


Sample = tuple[str, Callable[[Actors], JobActor], dict[str, Any]]


def samples() -> list[Sample]:
    """The demo's jobs: every actor once with a valid payload, and bad input."""
    return [
        (
            "email: OTP",
            lambda a: a.send_email,
            {"to": "ana@example.com", "subject": "Your Taatom code", "text": "Your code is 418203."},
        ),
        (
            "email: welcome (html)",
            lambda a: a.send_email,
            {
                "to": "Zoë Martins <zoe@example.com>",
                "subject": "Bem-vinda à Taatom ✈",
                "html": (
                    "<h1>Olá Zoë</h1><p>Your first trip awaits: "
                    '<a href="https://taatom.app/trips">plan it</a>.</p>'
                ),
                "idempotency_key": "welcome:zoe",
            },
        ),
        (
            "email: bad address",
            lambda a: a.send_email,
            {"to": "ana@@example.com", "subject": "Hi", "text": "..."},
        ),
        ("email: no recipient", lambda a: a.send_email, {"to": [], "subject": "Hi", "text": "..."}),
        # The photo comes from a server the demo runs on 127.0.0.1 (see demo_image_url).
        (
            "image: thumbnail",
            lambda a: a.process_image,
            {
                "image_url": demo_image_url(),
                "transformations": [{"width": 1080, "height": 1080, "crop": "limit"}],
            },
        ),
        (
            "image: variants",
            lambda a: a.process_image,
            {
                "image_url": demo_image_url(),
                "transformations": [{"width": 1080, "height": 1080, "crop": "limit", "quality": "auto"}],
                "variants": {
                    "thumb": [{"width": 150, "height": 150, "crop": "thumb", "fetch_format": "auto"}],
                    "square": [{"aspect_ratio": "1:1", "crop": "fill", "gravity": "north", "width": 600}],
                },
            },
        ),
        (
            "image: bad step",
            lambda a: a.process_image,
            {"image_url": demo_image_url(), "transformations": [{"width": 300, "crop": "squash"}]},
        ),
        (
            "image: metadata URL",
            lambda a: a.process_image,
            {"image_url": "http://169.254.169.254/latest/meta-data/", "transformations": []},
        ),
        ("image: ftp URL", lambda a: a.process_image, {"image_url": "ftp://x/1.jpg", "transformations": []}),
        # Over the sample events seeded for 2026-01-01 (see seed_mongo_samples).
        (
            "analytics: hourly",
            lambda a: a.aggregate_analytics,
            {"start_date": "2026-01-01", "end_date": "2026-01-01", "aggregation_type": "hourly"},
        ),
        (
            "analytics: daily",
            lambda a: a.aggregate_analytics,
            {"start_date": "2026-01-01", "end_date": "2026-01-01", "aggregation_type": "daily"},
        ),
        (
            "analytics: reversed",
            lambda a: a.aggregate_analytics,
            {"start_date": "2026-01-02", "end_date": "2026-01-01", "aggregation_type": "daily"},
        ),
        # Events only in the dry run and error logs only in the real run: the two
        # cleanups touch different collections, so their order does not matter.
        (
            "cleanup: dry run",
            lambda a: a.cleanup,
            {"cleanup_type": "analytics", "older_than_days": 90, "dry_run": True},
        ),
        (
            "cleanup: error logs",
            lambda a: a.cleanup,
            {"cleanup_type": "error_logs", "older_than_days": 30},
        ),
        ("cleanup: 3 days", lambda a: a.cleanup, {"cleanup_type": "all", "older_than_days": 3}),
    ]


def run_demo(out: TextIO = sys.stdout, environ: dict[str, str] | None = None) -> int:
    # The demo always runs embedded, whatever the environment says.
    settings = Settings.load(
        environ=environ,
        overrides={
            "ENABLE_BACKGROUND_JOBS": "false",
            "APP_ENV": "development",
            # e-mails go to the outbox folder, never to a real SMTP server
            "SMTP_HOST": "",
            # the demo's own photo server on loopback, and nothing else, passes the SSRF guard
            "IMAGE_FETCH_ALLOW_HOSTS": urlsplit(demo_image_url()).netloc,
        },
    )
    configure_logging(settings)
    broker = build_broker(settings)
    runtime = Runtime(settings)
    actors = declare_actors(broker, settings, runtime)
    api = JobsAPI(broker, settings)
    out.write("taatom-jobs demo (embedded mode: no Redis, MongoDB or SMTP server)\n\n")
    rows: list[Outcome] = []
    try:
        out.write(seed_mongo_samples(runtime, settings) + "\n")
        for name, pick, kwargs in samples():
            actor = pick(actors)
            try:
                message = actor.send(**kwargs)
                rows.append(Outcome(name, actor.queue_name, message.message_id))
                out.write(f"  sent     {name:<22} -> {actor.queue_name}\n")
            except JobError as exc:
                rows.append(
                    Outcome(name, actor.queue_name, state="refused", detail=f"{exc.code}: {exc.message}")
                )
                out.write(f"  refused  {name:<22} {exc.code} (at send: nothing was enqueued)\n")
        deadline = time.monotonic() + 60
        for row in rows:
            row.settle(api, deadline)
        finished = all(row.state != "running" for row in rows)
        rollups = sample_rollups(runtime, settings)
    finally:
        worker = embedded_worker(broker)
        if worker is not None:
            worker.stop()
        runtime.close()
    out.write("\n" + render_table(rows) + "\n")
    out.write(rollups)
    out.write(outbox_summary(settings))
    return 0 if finished else 1


def outbox_summary(settings: Settings) -> str:
    """Where the demo's e-mails went: the outbox folder unless SMTP_HOST is set."""
    if settings.smtp_host:
        return f"\ne-mails were handed to the SMTP server {settings.smtp_host}\n"
    from .mail.outbox import outbox_dir

    folder = outbox_dir(settings)
    files = sorted(folder.glob("*.eml"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    latest = f"; latest: {files[-1].name}" if files else ""
    return f"\ne-mails are written as .eml files to {folder} ({len(files)} there{latest})\n"


def seed_mongo_samples(runtime: Runtime, settings: Settings) -> str:
    """Sample analytics events and error logs for the analytics and cleanup samples (idempotent)."""
    from datetime import UTC, datetime

    from .analytics.samples import DEMO_DAY, seed_sample_events
    from .cleanup.samples import seed_sample_error_logs
    from .collections import CollectionNames

    names = CollectionNames.from_settings(settings)
    db = runtime.mongo_db()
    events = seed_sample_events(db, names)
    logs = seed_sample_error_logs(db, names, datetime.now(UTC))
    return f"  seeded   {events} sample analytics events on {DEMO_DAY} and {logs} error logs\n"


def sample_rollups(runtime: Runtime, settings: Settings) -> str:
    """A few aggregate rows the analytics samples wrote."""
    from .analytics.samples import describe_rollups
    from .collections import CollectionNames

    return describe_rollups(runtime.mongo_db(), CollectionNames.from_settings(settings))


def render_table(rows: list[Outcome]) -> str:
    header = ("job", "queue", "state", "attempts", "duration", "result or error code")
    lines = [
        (
            o.job,
            o.queue,
            o.state,
            str(o.attempts),
            "-" if o.duration_ms is None else f"{o.duration_ms:.0f} ms",
            o.detail,
        )
        for o in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header) - 1)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    rule = "-" * (sum(widths) + 2 * len(widths) + len(header[-1]))
    return "\n".join([fmt.format(*header), rule, *(fmt.format(*r) for r in lines)])
