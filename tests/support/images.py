"""Synthetic images for the image-job tests: made in memory, small, with known pixels.

Every helper returns encoded bytes (what an HTTP server would serve) or a Pillow image
whose colours at known places let a test check geometry by reading pixels back.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
# A 3x3 grid of distinct colours: cell (column, row) -> colour, for gravity checks.
GRID_COLOURS: dict[tuple[int, int], tuple[int, int, int]] = {
    (0, 0): (255, 0, 0),
    (1, 0): (0, 255, 0),
    (2, 0): (0, 0, 255),
    (0, 1): (255, 255, 0),
    (1, 1): (255, 0, 255),
    (2, 1): (0, 255, 255),
    (0, 2): (128, 0, 0),
    (1, 2): (0, 128, 0),
    (2, 2): (0, 0, 128),
}
GPS_IFD = 0x8825
ORIENTATION = 0x0112
# The transpose that turns the upright picture into what a camera stores for each
# EXIF orientation (the inverse of what a viewer applies).
_STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def grid(width: int = 90, height: int = 60, mode: str = "RGB") -> Image.Image:
    """A 3x3 grid of GRID_COLOURS, cells of width/3 x height/3."""
    image = Image.new(mode, (width, height))
    for (column, row), colour in GRID_COLOURS.items():
        box = (column * width // 3, row * height // 3, (column + 1) * width // 3, (row + 1) * height // 3)
        image.paste(colour if mode == "RGB" else (*colour, 255), box)
    return image


def quadrants(width: int = 40, height: int = 20) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    image.paste(RED, (0, 0, half_w, half_h))
    image.paste(GREEN, (half_w, 0, width, half_h))
    image.paste(BLUE, (0, half_h, half_w, height))
    image.paste(YELLOW, (half_w, half_h, width, height))
    return image


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(image: Image.Image | None = None, quality: int = 95, **options: Any) -> bytes:
    return encoded(image if image is not None else quadrants(), "JPEG", quality=quality, **options)


def gps_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with GPS coordinates (Lisbon), a camera model and the given orientation."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x0110] = "CanaryPhone 9"  # Model
    exif[GPS_IFD] = {1: "N", 2: (38.0, 42.0, 7.0), 3: "W", 4: (9.0, 8.0, 21.0)}
    return exif


def oriented_jpeg(orientation: int, upright: Image.Image | None = None) -> bytes:
    """A JPEG whose stored pixels, after applying ``orientation``, show ``upright``."""
    picture = upright if upright is not None else quadrants(48, 24)
    transpose = _STORED_AS[orientation]
    stored = picture.transpose(transpose) if transpose is not None else picture
    return jpeg(stored, exif=gps_exif(orientation).tobytes(), comment=b"secret comment")


def cmyk_jpeg() -> bytes:
    image = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red in CMYK
    image.paste((255, 0, 255, 0), (16, 0, 32, 16))  # green
    return jpeg(image)


def palette_png_with_transparency() -> bytes:
    """A palette PNG: left half transparent (index 0), right half opaque red (index 1)."""
    image = Image.new("P", (32, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (16, 0, 32, 16))
    return encoded(image, "PNG", transparency=0)


def png16_grey(level: int = 32768) -> bytes:
    """A 16-bit greyscale PNG at ``level`` (of 65535): mid grey by default."""
    rows = b"".join(b"\x00" + struct.pack(">H", level) * 16 for _ in range(8))
    return _png(16, 8, bit_depth=16, colour_type=0, raw=rows)


def animated_gif() -> bytes:
    """Two frames: red then blue; the first frame is what an output shows."""
    frames = [Image.new("RGB", (20, 10), RED), Image.new("RGB", (20, 10), BLUE)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def heic(image: Image.Image | None = None, **options: Any) -> bytes:
    return encoded(image if image is not None else quadrants(), "HEIF", quality=90, **options)


def avif(image: Image.Image | None = None, **options: Any) -> bytes:
    return encoded(image if image is not None else quadrants(), "AVIF", quality=90, **options)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all zeros: tiny compressed, huge decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    chunks, remaining = [], height
    while remaining:
        rows = min(1024, remaining)
        chunks.append(compressor.compress(row * rows))
        remaining -= rows
    chunks.append(compressor.flush())
    return _png(width, height, bit_depth=1, colour_type=0, compressed=b"".join(chunks))


def jpeg_header_claiming(width: int, height: int) -> bytes:
    """A JPEG start whose frame header claims width x height, then nothing (hostile header)."""
    head = jpeg(Image.new("RGB", (8, 8)))
    sof = head.index(b"\xff\xc0")
    return head[: sof + 5] + struct.pack(">HH", height, width) + head[sof + 9 : sof + 40]


def _png(
    width: int,
    height: int,
    *,
    bit_depth: int,
    colour_type: int,
    raw: bytes = b"",
    compressed: bytes | None = None,
) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = compressed if compressed is not None else zlib.compress(raw)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def wide_gamut_icc(description: str = "Test wide gamut (P3 primaries)") -> bytes:
    """A minimal ICC v2 RGB display profile with Display P3 primaries and a 2.2 gamma.

    Enough for LittleCMS to convert from: the colour a phone would tag its photos with.
    """

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    ascii_text = description.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 8 + b"\0" * 70
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2 (u8Fixed8)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
        (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0no copyright\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        padded = body + b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(padded))
        data += padded
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def hostile_inputs() -> dict[str, bytes]:
    """Files an attacker might upload instead of a photo (small; the bombs are separate)."""
    noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    good_jpeg, good_png = jpeg(noisy), encoded(noisy, "PNG")
    return {
        "truncated-jpeg": good_jpeg[: len(good_jpeg) * 6 // 10],
        "truncated-png": good_png[: len(good_png) * 6 // 10],
        "random-bytes": os.urandom(4096),
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        "empty": b"",
        "jpeg-header-claiming-65000x65000": jpeg_header_claiming(65000, 65000),
        "jpeg-header-claiming-0x0": jpeg_header_claiming(0, 0),
        "png-signature-only": b"\x89PNG\r\n\x1a\n",
        "gif-header-only": b"GIF89a\x10\x00\x10\x00",
        "ftyp-without-image": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    }


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def no_metadata(data: bytes) -> list[str]:
    """What metadata an encoded output still carries (empty when clean)."""
    found = []
    image = Image.open(io.BytesIO(data))
    if len(image.getexif()):
        found.append("exif")
    found += [
        key for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile") if key in image.info
    ]
    for marker, name in (
        (b"Exif\x00\x00", "Exif marker"),
        (b"secret comment", "comment"),
        (b"CanaryPhone", "model"),
    ):
        if marker in data:
            found.append(name)
    for chunk in (b"eXIf", b"tEXt", b"iTXt", b"zTXt"):
        if data.startswith(b"\x89PNG") and chunk in data:
            found.append(chunk.decode())
    return found


def rss_mib() -> float:
    """Resident memory of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextmanager
def close_delimited_server(body_bytes: int, headers: Mapping[str, str] | None = None) -> Iterator[str]:
    """An HTTP/1.0 server on 127.0.0.1 that streams ``body_bytes`` zeros with no Content-Length.

    The body ends only when the server closes: only a client's own running count can
    stop it early. Yields the URL; one connection at a time, stopped on exit.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()
    head = "HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(head.encode())
                    sent, block = 0, b"\x00" * 65536
                    while sent < body_bytes and not stop.is_set():
                        conn.sendall(block[: body_bytes - sent])
                        sent += min(len(block), body_bytes - sent)
                except OSError:
                    pass  # the client hung up once it had enough: expected

    thread = threading.Thread(target=serve, name="close-delimited-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/stream.jpg"
    finally:
        stop.set()
        thread.join()
        listener.close()
