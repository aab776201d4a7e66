"""The image pipeline against the naive Pillow way: a 12 MP phone JPEG to 1080x1080 `limit`.

    python -m bench image [--rounds 7]

naive: ``Image.open``, ``ImageOps.exif_transpose``, ``thumbnail((1080, 1080), LANCZOS)``.
pipeline: ``jobs.images.pipeline.process`` with the seed step (orientation read before
``draft()`` and applied after the resize, reduced-scale DCT decode, bicubic for the
remaining <2x reduction, metadata dropped); pipeline-lanczos: the same with Lanczos.
All encode the same JPEG (quality 80, progressive, 4:2:0), so the difference is
decoding and resizing. The photo is synthetic (gradients, noise, edges), stored upright
(orientation 1) and sideways (orientation 6, as phones store portrait shots). Rounds
alternate the variants; medians are reported, with best runs. Peak memory is each
variant's extra peak RSS in a fresh process over one that only imports and reads the
file. Similarity is the mean SSIM of the two outputs' luma over 8x8 blocks, and PSNR.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageMath, ImageOps

from bench.harness import machine, today, write_result

SIZE = (4000, 3000)  # 12 MP
SEED_STEP = [{"width": 1080, "height": 1080, "crop": "limit"}]
JPEG_OPTIONS = {"quality": 80, "progressive": True, "subsampling": 2}  # what the pipeline writes


def make_photo(orientation: int) -> bytes:
    """A photo-like 12 MP JPEG: smooth gradients, sensor-like noise and sharp edges."""
    rng = random.Random(6)
    width, height = SIZE
    red = Image.linear_gradient("L").resize(SIZE)
    green = Image.radial_gradient("L").resize(SIZE)
    blue = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(SIZE)
    noise = Image.effect_noise(SIZE, 24)
    photo = Image.merge("RGB", [Image.blend(c, noise, 0.25) for c in (red, green, blue)])
    draw = ImageDraw.Draw(photo)
    for _ in range(300):
        x, y = rng.randrange(width), rng.randrange(height)
        w, h = rng.randrange(20, 600), rng.randrange(20, 600)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + w, y + h), outline=colour, width=rng.randrange(1, 12))
        else:
            draw.line((x, y, x + w, y + h), fill=colour, width=rng.randrange(1, 8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (38.0, 42.0, 7.0), 3: "W", 4: (9.0, 8.0, 21.0)}
    stored = photo.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else photo
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def naive(data: bytes) -> bytes:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image.thumbnail((1080, 1080), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", **JPEG_OPTIONS)
    return out.getvalue()


def pipeline(data: bytes) -> bytes:
    from jobs.images.pipeline import Limits, process
    from jobs.images.steps import parse_chain

    return process(data, parse_chain(SEED_STEP), {}, Limits(max_pixels=60_000_000)).main.data


def pipeline_lanczos(data: bytes) -> bytes:
    """The pipeline with Lanczos for every resize: what its bicubic choice buys."""
    from jobs.images import pipeline as module

    chosen = module.SMALL_REDUCTION_FILTER
    module.SMALL_REDUCTION_FILTER = Image.Resampling.LANCZOS
    try:
        return pipeline(data)
    finally:
        module.SMALL_REDUCTION_FILTER = chosen


VARIANTS = {"naive": naive, "pipeline": pipeline, "pipeline-lanczos": pipeline_lanczos}


def similarity(a: bytes, b: bytes) -> tuple[float, float]:
    """(mean SSIM over 8x8 blocks of luma, PSNR in dB) of two encoded images of one size."""
    x = Image.open(io.BytesIO(a)).convert("L").convert("F")
    y = Image.open(io.BytesIO(b)).convert("L").convert("F")
    assert x.size == y.size, (x.size, y.size)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def product(p: Image.Image, q: Image.Image) -> Image.Image:
        return ImageMath.lambda_eval(lambda v: v["p"] * v["q"], p=p, q=q)  # type: ignore[no-any-return]

    mx, my = x.reduce(8), y.reduce(8)
    sxx, syy, sxy = product(x, x).reduce(8), product(y, y).reduce(8), product(x, y).reduce(8)
    ssim_map = ImageMath.lambda_eval(
        lambda v: (
            ((v["mx"] * v["my"] * 2 + c1) * ((v["sxy"] - v["mx"] * v["my"]) * 2 + c2))
            / (
                (v["mx"] * v["mx"] + v["my"] * v["my"] + c1)
                * (v["sxx"] - v["mx"] * v["mx"] + v["syy"] - v["my"] * v["my"] + c2)
            )
        ),
        mx=mx,
        my=my,
        sxx=sxx,
        syy=syy,
        sxy=sxy,
    )
    ssim = statistics.fmean(ssim_map.get_flattened_data())
    difference = ImageMath.lambda_eval(lambda v: (v["x"] - v["y"]) * (v["x"] - v["y"]), x=x, y=y)
    # ImageStat bins "F" images into a histogram: average the values themselves.
    mse = statistics.fmean(difference.get_flattened_data())
    psnr = float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
    return ssim, psnr


def time_rounds(data: bytes, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for fn in VARIANTS.values():  # warm-up: imports, codec initialisation
        fn(data)
    for _ in range(rounds):
        for name, fn in VARIANTS.items():
            started = time.perf_counter()
            fn(data)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def peak_extra_mib(variant: str, path: Path) -> float:
    def peak(name: str) -> float:
        out = subprocess.run(
            [sys.executable, "-m", "bench", "image", "--child", name, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip()) / 1024

    return peak(variant) - peak("none")


def child(variant: str, path: str) -> int:
    """Run one variant once and print this process's peak RSS in KiB."""
    from jobs.images import pipeline as _pipeline  # the same imports for every variant
    from jobs.images import steps as _steps

    data = Path(path).read_bytes()
    if variant != "none":
        VARIANTS[variant](data)
    # VmHWM, not ru_maxrss: the latter survives exec and starts at the parent's size.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(line.split()[1])
    del _pipeline, _steps
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench image")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for orientation in (1, 6):
            data = make_photo(orientation)
            path = Path(tmp) / f"photo-{orientation}.jpg"
            path.write_bytes(data)
            times = time_rounds(data, args.rounds)
            outputs = {name: fn(data) for name, fn in VARIANTS.items()}
            sizes = {Image.open(io.BytesIO(out)).size for out in outputs.values()}
            assert len(sizes) == 1, sizes
            rows.append(
                Row(
                    orientation=orientation,
                    source_bytes=len(data),
                    output_size=sizes.pop(),
                    times=times,
                    peaks={name: peak_extra_mib(name, path) for name in VARIANTS},
                    similarity={
                        n: similarity(outputs["naive"], out) for n, out in outputs.items() if n != "naive"
                    },
                )
            )
            summary = ", ".join(f"{n} {statistics.median(t):.0f} ms" for n, t in times.items())
            print(f"orientation {orientation}: {summary}", file=sys.stderr)
    text = render(rows, args.rounds)
    write_result("image", text)
    print(text)
    return 0


@dataclass
class Row:
    orientation: int
    source_bytes: int
    output_size: tuple[int, int]
    times: dict[str, list[float]]
    peaks: dict[str, float]
    similarity: dict[str, tuple[float, float]]


def render(rows: list[Row], rounds: int) -> str:
    from PIL import __version__ as pillow

    lines = [
        "# Image pipeline vs naive Pillow: 12 MP JPEG to 1080x1080 `limit`",
        "",
        f"- date: {today()}; machine: {machine()}; Pillow {pillow};"
        f" load average at the end {os.getloadavg()[0]:.1f} (the cores are shared: see the min-max spread)",
        f"- command: `python -m bench image --rounds {rounds}`; rounds alternate the variants;"
        " medians (min-max)",
        "- naive: `open` + `ImageOps.exif_transpose` + `thumbnail((1080, 1080), LANCZOS)`",
        "- pipeline: `jobs.images.pipeline.process` (orientation read before `draft()`, applied after"
        " the resize; DCT-scaled decode; bicubic for the remaining <2x reduction);"
        " pipeline-lanczos: the same with Lanczos",
        "- every variant saves the same JPEG (q80, progressive, 4:2:0)",
        "- source: synthetic 4000x3000 photo (gradients, noise, edges), JPEG q92 with EXIF/GPS",
        "- similarity to the naive output: mean SSIM of luma over 8x8 blocks (1.0 = identical), PSNR",
        "- peak memory: extra peak RSS of one run in a fresh process over imports + reading the file",
        "",
    ]
    for row in rows:
        med = {n: statistics.median(t) for n, t in row.times.items()}
        lines += [
            f"## EXIF orientation {row.orientation} (source {row.source_bytes / 1e6:.1f} MB,"
            f" output {row.output_size[0]}x{row.output_size[1]})",
            "",
            "| variant | time ms, median (min-max) | speed-up: medians (best runs) | SSIM | PSNR dB"
            " | peak MiB |",
            "|---|---|---|---|---|---|",
        ]
        for name, values in row.times.items():
            ssim, psnr = row.similarity.get(name, (1.0, float("inf")))
            lines.append(
                f"| {name} | {med[name]:.0f} ({min(values):.0f}-{max(values):.0f}) |"
                f" **{med['naive'] / med[name]:.2f}x** ({min(row.times['naive']) / min(values):.2f}x) |"
                f" {ssim:.4f} | {psnr:.1f} | {row.peaks[name]:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
