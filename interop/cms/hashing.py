"""Hash content from a stream in bounded chunks, one or many byte ranges in one pass."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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


def hashable(algorithm: str) -> tuple[str, ...]:
    """``(algorithm,)`` when it can be hashed, else ``()``: for ``hash_ranges`` requests.

    A signature's digest we do not support is that signature's failure, which
    ``verify_parsed`` reports as a result; it is no reason to stop reading the message around
    it (the sender must still get Rejection evidence).
    """
    return (algorithm,) if algorithm in STRONG_DIGESTS | LEGACY_DIGESTS else ()


def digest_bytes(name: str, data: bytes) -> bytes:
    h = new_hash(name)
    h.update(data)
    return h.digest()


ByteRange = tuple[int, int]  # [start, end) offsets in a stream


def hash_ranges(
    stream: BinaryIO,
    ranges: Mapping[str, tuple[ByteRange, tuple[str, ...]]],
    chunk: int = STREAM_CHUNK,
    *,
    parallel: bool = True,
) -> dict[tuple[str, str], bytes]:
    """Hash several byte ranges of a seekable stream reading each byte once.

    ``ranges`` maps a label to ``((start, end), algorithms)``; the result maps
    ``(label, algorithm)`` to the digest. Memory stays at two chunks whatever the sizes.

    An envelope's signed part, its original and the user's signed part overlap almost entirely,
    so a large Dispatch is hashed three times over. hashlib releases the GIL on large buffers,
    so with ``parallel`` the digests of one chunk are computed on several cores while the next
    chunk is read. Threads here only compute; no I/O happens in them.
    """
    hashers = [
        (label, alg, start, end, new_hash(alg))
        for label, ((start, end), algs) in ranges.items()
        for alg in algs
    ]
    if not hashers:
        return {}
    low = min(h[2] for h in hashers)
    high = max(h[3] for h in hashers)
    # os.cpu_count() reads /sys/devices/system/cpu/online each time: asked only for a large span.
    workers = 1 if high - low < _PARALLEL_FROM else min(len(hashers), os.cpu_count() or 1)
    if not parallel or workers < 2:
        _hash_serially(stream, hashers, low, high, chunk)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kep-hash") as pool:
            _hash_in_parallel(stream, hashers, low, high, chunk, pool)
    return {(label, alg): h.digest() for label, alg, _s, _e, h in hashers}


_Hasher = tuple[str, str, int, int, "hashlib._Hash"]
# Below this many bytes, starting threads costs more than it saves.
_PARALLEL_FROM = 4 * STREAM_CHUNK


def _read(stream: BinaryIO, pos: int, high: int, chunk: int) -> bytes:
    block = stream.read(min(chunk, high - pos))
    if not block:
        raise CmsFormatError("the content ended before its announced length")
    return block


def _slices(
    hashers: list[_Hasher], pos: int, block: bytes
) -> list[tuple[hashlib._Hash, memoryview]]:
    block_end = pos + len(block)
    view = memoryview(block)
    out = []
    for _label, _alg, start, end, h in hashers:
        a, b = max(start, pos), min(end, block_end)
        if a < b:
            out.append((h, view[a - pos : b - pos]))
    return out


def _hash_serially(
    stream: BinaryIO, hashers: list[_Hasher], low: int, high: int, chunk: int
) -> None:
    stream.seek(low)
    pos = low
    while pos < high:
        block = _read(stream, pos, high, chunk)
        for h, piece in _slices(hashers, pos, block):
            h.update(piece)
        pos += len(block)


def _hash_in_parallel(
    stream: BinaryIO,
    hashers: list[_Hasher],
    low: int,
    high: int,
    chunk: int,
    pool: ThreadPoolExecutor,
) -> None:
    stream.seek(low)
    pos = low
    block = _read(stream, pos, high, chunk)
    while True:
        # Each hash object gets exactly one update per chunk, and the next chunk's updates
        # start only after these finish: every digest sees its bytes in order.
        pending = [pool.submit(h.update, piece) for h, piece in _slices(hashers, pos, block)]
        pos += len(block)
        following = _read(stream, pos, high, chunk) if pos < high else None
        for future in pending:
            future.result()
        if following is None:
            return
        block = following


def hash_stream(stream: BinaryIO, name: str, chunk: int = STREAM_CHUNK) -> bytes:
    """Digest of everything left in ``stream``."""
    h = new_hash(name)
    while block := stream.read(chunk):
        h.update(block)
    return h.digest()
