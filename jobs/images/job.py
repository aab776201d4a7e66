"""The ``process_image`` job: fetch the source, run the pipeline, store the outputs.

Returns ``{"success": true, "processed_url", "width", "height", "format", "bytes"}``
for ``transformations``, plus ``"variants": {name: {the same five fields}}`` when
variants were asked for. Errors are :class:`JobError` with registered codes, raised at
each boundary (fetch, decode, storage); see ``docs/images.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..payloads import ImagePayload
    from ..runtime import Runtime
    from ..settings import Settings
    from .encode import Encoded
    from .fetch import ImageFetcher
    from .pipeline import Limits
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


def make_image_job(runtime: Runtime, settings: Settings) -> Callable[[ImagePayload], JobResult]:
    """The job function the ``process_image`` actor runs with a validated payload."""
    lock = threading.Lock()
    parts: list[_Parts] = []

    def process_image(payload: ImagePayload) -> JobResult:
        from .pipeline import process
        from .steps import parse_chain, parse_variants

        with lock:
            if not parts:
                parts.append(_Parts(runtime, settings))
        p = parts[0]
        steps = parse_chain(payload.transformations)
        variants = parse_variants(payload.variants or {})
        data = p.fetcher.fetch(payload.image_url)
        outputs = process(data, steps, variants, p.limits)
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
