"""Seeded random and mutated multipart requests for fuzzing an upload endpoint (no fixtures here)."""

from __future__ import annotations

import io
import random

from PIL import Image

FIELD_NAMES = ["image", "top_k", "file", "Image", "", "image[]", 'im"age', "top_k ", "ímage", "x" * 300, "image\x00"]
VALUES = ["3", "five", "0", "-1", "1e999", "NaN", "true", "null", "[1]", '{"a":1}', "2.5", "9" * 400, "[" * 20000,
          "", " 4 ", '"3"', "0x10", "１"]  # fmt: skip
CONTENT_TYPES = [
    b"multipart/form-data", b"multipart/form-data; boundary=", b"multipart/form-data; boundary=wrong",
    b"multipart/mixed; boundary=B", b"application/json", b"application/x-www-form-urlencoded", b"text/plain", b"",
    b";;;", b"multipart/form-data; boundary=" + b"z" * 2000,
]  # fmt: skip


def small_png(rng: random.Random) -> bytes:
    """A small real PNG of random size and colour."""
    buffer = io.BytesIO()
    colour = tuple(rng.randrange(256) for _ in range(3))
    Image.new("RGB", (rng.randint(1, 64), rng.randint(1, 64)), colour).save(buffer, "PNG")
    return buffer.getvalue()


def part(name: str | None, value: bytes, filename: str | None = None, newline: bytes = b"\r\n") -> bytes:
    """One multipart part with its Content-Disposition."""
    disposition = b"Content-Disposition: form-data"
    if name is not None:
        disposition += b'; name="' + name.encode("utf-8", "surrogatepass") + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename.encode() + b'"'
    return disposition + newline + newline + value


def multipart(parts: list[bytes], boundary: bytes, newline: bytes = b"\r\n", close: bool = True) -> bytes:
    """Parts joined under ``boundary`` (optionally without the closing delimiter)."""
    body = b"".join(b"--" + boundary + newline + p + newline for p in parts)
    return body + (b"--" + boundary + b"--" + newline if close else b"")


def mutate(rng: random.Random, body: bytes) -> bytes:
    """Truncate, flip bytes, replace or wrap the body (or leave it)."""
    roll = rng.random()
    if roll < 0.1:
        return body[: rng.randrange(len(body) + 1)]
    if roll < 0.2:
        mutable = bytearray(body)
        for _ in range(rng.randint(1, 20)):
            if mutable:
                mutable[rng.randrange(len(mutable))] = rng.randrange(256)
        return bytes(mutable)
    if roll < 0.25:
        return rng.randbytes(rng.randint(0, 2000))
    if roll < 0.3:
        return b"preamble junk\r\n" + body + b"epilogue"
    return body


def request(rng: random.Random, field: str = "image", option: str = "top_k") -> tuple[dict[str, bytes], bytes]:
    """(headers, body) of one fuzz case for a file ``field`` and a value ``option``: a third near-valid, the rest
    malformed in assorted ways."""
    image = small_png(rng)
    if rng.random() < 0.3:
        data = image if rng.random() < 0.7 else image[: rng.randrange(len(image) + 1)]
        upload = part(field, data, rng.choice(["a.png", "a" * 300, "ü", ""]))
        parts = [upload, part(option, rng.choice(VALUES).encode())]
        return {"content-type": b"multipart/form-data; boundary=Zz"}, multipart(parts, b"Zz")
    boundary = rng.choice([b"B0undary", b"x" * 70, b"a", b"-", b"'quoted'", b"sp ace"])
    newline = rng.choice([b"\r\n"] * 6 + [b"\n"])
    parts = []
    if rng.random() < 0.85:
        name = rng.choice([field] * 6 + FIELD_NAMES)
        parts.append(part(name, image, rng.choice(["a.png", None, "", "../../etc/passwd", "a" * 300]), newline))
    for _ in range(rng.choice([0, 1, 1, 2, 20])):
        value = rng.choice(VALUES).encode("utf-8", "surrogatepass") if rng.random() < 0.8 else rng.randbytes(30)
        parts.append(part(rng.choice([option] * 4 + FIELD_NAMES), value, None if rng.random() < 0.8 else "v.txt"))
    if rng.random() < 0.08:
        parts.append(part(None, b"noname", None, newline))
    rng.shuffle(parts)
    body = mutate(rng, multipart(parts, boundary, newline, close=rng.random() < 0.9))
    content_type = rng.choice([b"multipart/form-data; boundary=" + boundary] * 8 + CONTENT_TYPES)
    return {"content-type": content_type}, body
