"""Hash content from a stream in bounded chunks, one or many byte ranges in one pass."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import BinaryIO

from interop.errors import CmsFormatError
from interop.limits import STREAM_CHUNK

# RFC 8551 §2.1 and INTEROP-PROFILE.md §1: SHA-256 or stronger; SHA-1 only for legacy evidence.
STRONG_DIGESTS = frozenset({"sha256", "sha384", "sha512"})
LEGACY_DIGESTS = frozenset({"sha1"})


def new_hash(name: str) -> hashlib._Hash:
    if name not in STRONG_DIGESTS | LEGACY_DIGESTS:
        raise CmsFormatError(f"digest algorithm {name} is not supported")
    return hashlib.new(name)


def digest_bytes(name: str, data: bytes) -> bytes:
    h = new_hash(name)
    h.update(data)
    return h.digest()


ByteRange = tuple[int, int]  # [start, end) offsets in a stream


def hash_ranges(
    stream: BinaryIO,
    ranges: Mapping[str, tuple[ByteRange, tuple[str, ...]]],
    chunk: int = STREAM_CHUNK,
) -> dict[tuple[str, str], bytes]:
    """Hash several byte ranges of a seekable stream reading each byte once.

    ``ranges`` maps a label to ``((start, end), algorithms)``; the result maps
    ``(label, algorithm)`` to the digest. Memory stays at one chunk whatever the sizes.
    """
    if not ranges:
        return {}
    hashers = {
        (label, alg): (start, end, new_hash(alg))
        for label, ((start, end), algs) in ranges.items()
        for alg in algs
    }
    low = min(start for start, _end, _h in hashers.values())
    high = max(end for _start, end, _h in hashers.values())
    stream.seek(low)
    pos = low
    while pos < high:
        block = stream.read(min(chunk, high - pos))
        if not block:
            raise CmsFormatError("the content ended before its announced length")
        block_end = pos + len(block)
        for start, end, h in hashers.values():
            a, b = max(start, pos), min(end, block_end)
            if a < b:
                h.update(memoryview(block)[a - pos : b - pos])
        pos = block_end
    return {key: h.digest() for key, (_s, _e, h) in hashers.items()}


def hash_stream(stream: BinaryIO, name: str, chunk: int = STREAM_CHUNK) -> bytes:
    """Digest of everything left in ``stream``."""
    h = new_hash(name)
    while block := stream.read(chunk):
        h.update(block)
    return h.digest()
