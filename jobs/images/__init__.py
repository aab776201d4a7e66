"""The image-processing job: fetch a source image safely, transform it, store the outputs.

- ``steps``: the Cloudinary-style step language, parsed and validated (pure).
- ``transform``: what each step does to a size: crop box, resize, pad, rotation (pure).
- ``decode`` / ``encode``: Pillow at the edges: sniffing, caps, orientation, formats, metadata.
- ``pipeline``: ``process(data, steps, variants, limits)``: bytes in, encoded outputs out.
- ``addresses`` / ``fetch``: the SSRF-safe HTTP fetch of ``image_url``.
- ``storage``: content-addressed, atomic writes to a directory or a GridFS bucket.
- ``job``: ``make_image_job(runtime, settings)``, the function the actor runs.

Semantics and the choices made where Cloudinary is silent: ``docs/images.md``.
"""
