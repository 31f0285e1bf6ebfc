"""RFC 3161 time-stamp tokens: a local TSA for development, and verification of any token.

A signature time-stamp (CAdES-T, id-aa-signatureTimeStampToken) stamps the signature value.
Fetching a token from a real TSA over the network is the relay's job (``relay.tsa``, with the
request and reply of ``interop.cms.tsp``); this module only builds a token with a key handed in
(the dev TSA) and verifies tokens.

The tokens made here carry what ``openssl ts -verify`` and RFC 5816 ask of a TSA: the TSA's
certificate, and a signing-certificate-v2 attribute (ESSCertIDv2, SHA-256) naming it, which
``sign_digest`` puts in every signature.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat import asn1

from interop.cms import der, keys
from interop.cms import structures as s
from interop.cms.hashing import digest_bytes
from interop.cms.parse import ParsedSignedData, read_time, whole
from interop.cms.sign import sign_digest
from interop.cms.signer_info import check_signer
from interop.errors import CmsFormatError, translated
from interop.pathval import CertificateValidator, ChainResult, subject_text
from interop.pki.signer import Signer

# A policy OID for the development TSA, under the UUID arc 2.25 (ITU-T X.667), which anyone may
# use without registration. Derived from the UUID 6f0b6d2e-4a65-4b5e-9a7d-6b6570a1a0c1.
DEV_TSA_POLICY = "2.25.147822306938547116372386282108022661313"


@dataclass(frozen=True, slots=True)
class TimestampResult:
    ok: bool
    time: dt.datetime | None  # the token's genTime, when it could be read
    tsa: str
    detail: str
    # The TSA's chain as validated, with the CRLs used (for keeping with the evidence, §7).
    chain: ChainResult | None = None

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """The TSA's certificate and its chain (leaf to anchor) when it was validated."""
        return self.chain.chain if self.chain is not None else ()

    @property
    def crls(self) -> tuple[x509.CertificateRevocationList, ...]:
        return self.chain.crls if self.chain is not None else ()


def make_token(
    tsa: Signer,
    data: bytes,
    now: dt.datetime,
    serial: int,
    digest: str = "sha256",
    *,
    nonce: int | None = None,
    policy: str = DEV_TSA_POLICY,
) -> bytes:
    """A TimeStampToken (DER ContentInfo) stamping ``data`` at ``now``."""
    return token_for_imprint(
        tsa, digest, digest_bytes(digest, data), now, serial, nonce=nonce, policy=policy
    )


def token_for_imprint(
    tsa: Signer,
    digest: str,
    hashed: bytes,
    now: dt.datetime,
    serial: int,
    *,
    nonce: int | None = None,
    policy: str = DEV_TSA_POLICY,
) -> bytes:
    """A TimeStampToken over a message imprint (what a TSA gets in a request: the hash only).

    ``nonce`` is echoed when the request had one (RFC 3161 §2.4.2: it MUST then be there).
    """
    # RFC 3161 §2.4.2 TSTInfo, its fields in order; what is the same for every token under
    # one policy and digest is encoded once (see interop.cms.der).
    fields = [
        _version_and_policy(policy),
        der.sequence(keys.digest_algorithm_der(digest), core.OctetString(hashed).dump()),
        core.Integer(serial).dump(),
        core.GeneralizedTime(now.astimezone(dt.UTC)).dump(),
    ]
    if nonce is not None:
        fields.append(core.Integer(nonce).dump())
    return token_carrying(tsa, der.sequence(*fields), now)


def token_carrying(tsa: Signer, tst_info: bytes, now: dt.datetime) -> bytes:
    """A TimeStampToken: SignedData by ``tsa`` encapsulating the DER ``tst_info`` as given."""
    return sign_digest(
        tsa,
        hashlib.sha256(tst_info).digest(),
        now,
        content_type="tst_info",
        encapsulated=tst_info,
    )


@functools.lru_cache(maxsize=16)
def _version_and_policy(policy: str) -> bytes:
    encoded: bytes = tsp.Version("v1").dump() + core.ObjectIdentifier(policy).dump()
    return encoded


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

    def serial(self, now: dt.datetime) -> int:
        micros = int(now.timestamp() * 1_000_000)
        return (micros << 40) | (self._instance << 16) | (next(self._counter) & 0xFFFF)

    def stamp(self, data: bytes, now: dt.datetime) -> bytes:
        return make_token(self.signer, data, now, self.serial(now))

    def stamp_imprint(
        self, digest: str, hashed: bytes, now: dt.datetime, *, nonce: int | None = None
    ) -> bytes:
        return token_for_imprint(self.signer, digest, hashed, now, self.serial(now), nonce=nonce)


def read_tst_info(parsed: ParsedSignedData) -> tuple[s.TstInfo, bytes]:
    """The TSTInfo a token carries (RFC 3161 §2.4.2), and its DER, which the token's
    signature covers; ``CmsFormatError`` when it has none or it cannot be read."""
    encoded = parsed.encapsulated
    if parsed.content_type != "tst_info" or encoded is None:
        raise CmsFormatError("it holds no TSTInfo")
    with translated(CmsFormatError, "its TSTInfo cannot be read"):
        tst_info: s.TstInfo = asn1.decode_der(s.TstInfo, encoded)
        return tst_info, encoded


def gen_time(tst_info: s.TstInfo, what: str = "the time-stamp's genTime") -> dt.datetime:
    """The TSTInfo's genTime; ``CmsFormatError`` naming ``what`` when it is no DER UTC time."""
    return read_time(tst_info.gen_time, what)


def token_gen_time(token: bytes) -> dt.datetime:
    """The genTime a token claims, unverified; ``CmsFormatError`` when it cannot be read."""
    return gen_time(read_tst_info(ParsedSignedData.parse(token))[0])


@dataclass(frozen=True, slots=True)
class _Token:
    parsed: ParsedSignedData
    gen_time: dt.datetime
    hashed: bytes  # the imprint the TSA stamped
    expected: bytes  # the imprint of the data it should have stamped
    content_digest: bytes  # of the TSTInfo, for the token's own signature


def _read_token(token: bytes, data: bytes) -> _Token:
    """The parts of a token needed to check it; ``CmsFormatError`` when it cannot be read."""
    parsed = ParsedSignedData.parse(token)
    tst_info, encoded = read_tst_info(parsed)
    imprint = tst_info.message_imprint
    with translated(CmsFormatError, "its TSTInfo cannot be read"):
        algorithm = keys.digest_name(whole(imprint.hash_algorithm, "the imprint's algorithm"))
        expected = digest_bytes(algorithm, data)
    return _Token(
        parsed,
        gen_time(tst_info),
        imprint.hashed_message,
        expected,
        digest_bytes(parsed.digest_algorithm, encoded),
    )


def verify_token(
    token: bytes,
    data: bytes,
    now: dt.datetime,
    validator: CertificateValidator,
    *,
    valid_at: dt.datetime | None = None,
) -> TimestampResult:
    """Check that ``token`` (DER) is a valid time-stamp over ``data`` by a trusted TSA.

    The TSA's chain is judged at ``now`` (a CRL current now is needed), or, when the caller
    knows a later time at which it held (``valid_at``: when the token was first verified and
    its CRLs kept, or a time an archive time-stamp proves, profile §7), at that time by the
    rules for a past time (``interop.revocation``). ``valid_at`` must lie between genTime
    (the TSA's key must be shown good after it made the token) and ``now``.

    Returns a result for every token, however malformed (a time-stamp is part of a signature,
    whose verification reports rather than raises).
    """
    try:
        read = _read_token(token, data)
    except CmsFormatError as exc:
        return TimestampResult(False, None, "", f"time-stamp token: {exc.detail}")
    gen_time = read.gen_time
    if not hmac.compare_digest(read.hashed, read.expected):
        return TimestampResult(False, gen_time, "", "the time-stamp is over other data")
    try:
        check = check_signer(read.parsed, read.content_digest)
    except CmsFormatError as exc:
        return TimestampResult(False, gen_time, "", f"time-stamp token: {exc.detail}")
    tsa = subject_text(check.signer) if check.signer else ""
    if not check.intact or check.signer is None:
        return TimestampResult(False, gen_time, tsa, f"time-stamp token: {check.detail}")
    if valid_at is not None and not gen_time <= valid_at <= now:
        return TimestampResult(
            False,
            gen_time,
            tsa,
            f"the TSA is to be judged at {valid_at.isoformat()}, "
            + (
                f"before the time-stamp's genTime {gen_time.isoformat()}"
                if valid_at < gen_time
                else "after the verification time"
            ),
        )
    chain = validator.validate(
        check.signer,
        [c for c in read.parsed.certificates if c is not check.signer],
        now if valid_at is None else valid_at,
        proven=valid_at is not None,
    )
    if not chain.ok:
        return TimestampResult(False, gen_time, tsa, f"time-stamp: {chain.detail}", chain)
    if gen_time > now:
        return TimestampResult(False, gen_time, tsa, "the time-stamp is in the future", chain)
    if gen_time < check.signer.not_valid_before_utc:
        return TimestampResult(
            False, gen_time, tsa, "the time-stamp is older than its TSA's certificate", chain
        )
    return TimestampResult(True, gen_time, tsa, f"time-stamped at {gen_time.isoformat()}", chain)


def verify_signature_timestamps(
    tokens: Sequence[tuple[bytes, bytes]],
    now: dt.datetime,
    validator: CertificateValidator | None,
    *,
    valid_at: dt.datetime | None = None,
) -> TimestampResult | None:
    """The time-stamps on one signature, each a (token, stamped data) pair, as one answer.

    None when there are none. Otherwise every token must verify (§3: "MUST be verified when
    present"; a time-stamped signature with no TSA trusted fails rather than passing
    unchecked): the answer is the first that fails, or else the earliest, whose genTime is
    the time the signature is proven to have existed (profile §1 "Signing time").
    """
    if not tokens:
        return None
    if validator is None:
        return TimestampResult(
            False, None, "", "the signature is time-stamped but no TSA is trusted"
        )
    results = []
    for token, data in tokens:
        result = verify_token(token, data, now, validator, valid_at=valid_at)
        if not result.ok:
            return result
        results.append(result)
    return min(results, key=lambda r: r.time or now)
