"""The ``process_image`` job: fetch the source, run the pipeline, store the outputs.

Returns ``{"success": true, "processed_url", "width", "height", "format", "bytes"}``
for ``transformations``, plus ``"variants": {name: {the same five fields}}`` when
variants were asked for. Errors are :class:`JobError` with registered codes, raised at
each boundary (fetch, decode, storage); see ``docs/images.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..payloads import ImagePayload
    from ..runtime import Runtime
    from ..settings import Settings
    from .encode import Encoded
    from .fetch import ImageFetcher
    from .pipeline import Limits, Outputs
    from .sandbox import ImageSandbox
    from .steps import Step
    from .storage import ImageStore

JobResult = dict[str, Any]


class _Parts:
    """The job's fetcher, store and limits, built on the first run in a worker.

    Deferred so that the web app, which imports ``jobs`` only to send, pays for no
    HTTP client, image codecs or process-wide warning filter.
    """

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        from .decode import escalate_bomb_warnings
        from .fetch import FetchPolicy, ImageFetcher
        from .pipeline import Limits
        from .storage import open_store

        escalate_bomb_warnings()
        self.fetcher: ImageFetcher = ImageFetcher(FetchPolicy.from_settings(settings))
        self.store: ImageStore = open_store(settings, runtime)
        self.limits: Limits = Limits(max_pixels=settings.image_max_pixels)
        self.time_limit_ms: int = settings.queue_policy("image-processing").time_limit_ms
        self.sandbox: ImageSandbox | None = None
        if settings.image_sandbox_processes:
            from .sandbox import SandboxPolicy, sandbox_for

            self.sandbox = sandbox_for(SandboxPolicy.from_settings(settings))

    def process(
        self, data: bytes, steps: Sequence[Step], variants: Mapping[str, Sequence[Step]], started: float
    ) -> Outputs:
        """The pipeline: in the sandbox, with what is left of the job's time limit; else in this thread."""
        from .pipeline import process

        if self.sandbox is None:
            return process(data, steps, variants, self.limits)
        remaining_s = _time_limit_ms(self.time_limit_ms) / 1000 - (time.monotonic() - started)
        return self.sandbox.process(data, steps, variants, self.limits, remaining_s)


def _time_limit_ms(default_ms: int) -> int:
    """The current message's own ``time_limit`` option, else the queue's (as QueueTimeLimit resolves it)."""
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    limit = message.options.get("time_limit") if message is not None else None
    return int(limit) if limit else default_ms


def make_image_job(runtime: Runtime, settings: Settings) -> Callable[[ImagePayload], JobResult]:
    """The job function the ``process_image`` actor runs with a validated payload."""
    lock = threading.Lock()
    parts: list[_Parts] = []

    def process_image(payload: ImagePayload) -> JobResult:
        from .steps import parse_chain, parse_variants

        started = time.monotonic()
        with lock:
            if not parts:
                parts.append(_Parts(runtime, settings))
        p = parts[0]
        steps = parse_chain(payload.transformations)
        variants = parse_variants(payload.variants or {})
        data = p.fetcher.fetch(payload.image_url)
        outputs = p.process(data, steps, variants, started)
        result: JobResult = {"success": True, **_stored(p.store, payload.image_url, steps, outputs.main)}
        if variants:
            result["variants"] = {
                name: _stored(p.store, payload.image_url, variants[name], image)
                for name, image in outputs.variants.items()
            }
        return result

    return process_image


def _stored(store: ImageStore, source_url: str, steps: Sequence[Step], image: Encoded) -> JobResult:
    from .storage import image_key

    return {
        "processed_url": store.put(image_key(source_url, steps, image), image),
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "bytes": len(image.data),
    }
