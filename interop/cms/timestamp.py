"""RFC 3161 time-stamp tokens: a local TSA for development, and verification of any token.

A signature time-stamp (CAdES-T, id-aa-signatureTimeStampToken) stamps the signature value.
Fetching a token from a real TSA over the network is the relay's job; this module only builds a
token with a key handed in (the dev TSA) and verifies tokens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
from dataclasses import dataclass

from asn1crypto import cms, tsp

from interop.cms.hashing import digest_bytes
from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.signer_info import check_signer
from interop.errors import CmsFormatError
from interop.pathval import CertificateValidator, subject_text
from interop.pki.signer import Signer

# A policy OID for the development TSA, under the UUID arc 2.25 (ITU-T X.667), which anyone may
# use without registration. Derived from the UUID 6f0b6d2e-4a65-4b5e-9a7d-6b6570a1a0c1.
DEV_TSA_POLICY = "2.25.147822306938547116372386282108022661313"


@dataclass(frozen=True, slots=True)
class TimestampResult:
    ok: bool
    time: dt.datetime | None
    tsa: str
    detail: str


def make_token(
    tsa: Signer, data: bytes, now: dt.datetime, serial: int, digest: str = "sha256"
) -> bytes:
    """A TimeStampToken (DER ContentInfo) stamping ``data`` at ``now``."""
    tst_info = tsp.TSTInfo(
        {
            "version": "v1",
            "policy": DEV_TSA_POLICY,
            "message_imprint": {
                "hash_algorithm": {"algorithm": digest},
                "hashed_message": digest_bytes(digest, data),
            },
            "serial_number": serial,
            "gen_time": now.astimezone(dt.UTC),
        }
    ).dump()
    return sign_digest(
        tsa,
        hashlib.sha256(tst_info).digest(),
        now,
        content_type="tst_info",
        encapsulated=tst_info,
    )


class LocalTsa:
    """Stamps with a key held in process (development, tests and a node's own TSA key).

    Serial numbers must be unique per TSA (RFC 3161 §2.4.2): microseconds since the epoch,
    then ``instance`` (24 bits: what tells apart processes stamping with the same key at
    once), then a counter (16 bits; ``itertools.count`` is safe across threads).
    """

    def __init__(self, signer: Signer, instance: int = 0) -> None:
        self.signer = signer
        self._instance = instance & 0xFFFFFF
        self._counter = itertools.count(1)

    def stamp(self, data: bytes, now: dt.datetime) -> bytes:
        micros = int(now.timestamp() * 1_000_000)
        serial = (micros << 40) | (self._instance << 16) | (next(self._counter) & 0xFFFF)
        return make_token(self.signer, data, now, serial)


def verify_token(
    token: cms.ContentInfo, data: bytes, now: dt.datetime, validator: CertificateValidator
) -> TimestampResult:
    """Check that ``token`` is a valid time-stamp over ``data`` by a trusted TSA."""
    try:
        parsed = ParsedSignedData.from_content_info(token)
        if parsed.content_type != "tst_info" or parsed.encapsulated is None:
            return TimestampResult(False, None, "", "the time-stamp token holds no TSTInfo")
        tst_info = tsp.TSTInfo.load(parsed.encapsulated, strict=True)
        imprint = tst_info["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        expected = digest_bytes(algorithm, data)
        gen_time = tst_info["gen_time"].native
        hashed = bytes(imprint["hashed_message"].native)
        content_digest = digest_bytes(parsed.digest_algorithm, parsed.encapsulated)
    except (ValueError, TypeError, KeyError, CmsFormatError) as exc:
        return TimestampResult(False, None, "", f"the time-stamp token is not readable: {exc}")
    if not hmac.compare_digest(hashed, expected):
        return TimestampResult(False, gen_time, "", "the time-stamp is over other data")
    check = check_signer(parsed, content_digest)
    tsa = subject_text(check.signer) if check.signer else ""
    if not check.intact or check.signer is None:
        return TimestampResult(False, gen_time, tsa, f"time-stamp token: {check.detail}")
    chain = validator.validate(
        check.signer, [c for c in parsed.certificates if c != check.signer], now
    )
    if not chain.ok:
        return TimestampResult(False, gen_time, tsa, f"time-stamp: {chain.detail}")
    if gen_time > now:
        return TimestampResult(False, gen_time, tsa, "the time-stamp is in the future")
    return TimestampResult(True, gen_time, tsa, f"time-stamped at {gen_time.isoformat()}")
