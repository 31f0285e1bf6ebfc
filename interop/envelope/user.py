"""Verify a user's signed message as submitted to the S-GW (INTEROP-PROFILE.md §4 S-GW 1).

The message is a stream; its signed part is located and hashed in place together with the
whole message (whose SHA-256 the SubmissionAcceptanceRejection records), in one pass.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import BinaryIO

from interop.cms.hashing import hash_ranges, hashable
from interop.cms.verify import SignatureResult, verify_parsed
from interop.envelope.fields import decode_text
from interop.envelope.mime import Headers, Span
from interop.envelope.smime import locate_signed_message
from interop.limits import DEFAULT_LIMITS, Limits
from interop.pathval import CertificateValidator
from interop.reasons import Reason


@dataclass(frozen=True, slots=True)
class UserMessageVerification:
    headers: Headers
    signature: SignatureResult
    digest: bytes  # SHA-256 of the whole message, as MessageDetails records it
    size: int

    @property
    def ok(self) -> bool:
        return self.signature.ok

    @property
    def reason(self) -> Reason | None:
        return self.signature.reason

    @property
    def subject(self) -> str:
        return decode_text(self.headers.get("Subject"))


def verify_user_message(
    stream: BinaryIO,
    validator: CertificateValidator,
    now: dt.datetime,
    *,
    limits: Limits = DEFAULT_LIMITS,
    allow_sha1: bool = False,
    tsa_validator: CertificateValidator | None = None,
    tsa_valid_at: dt.datetime | None = None,
) -> UserMessageVerification:
    """Verify the user's e-imza on a message; raises ``MalformedInput`` if it is not S/MIME.

    A time-stamped e-imza (CAdES-T) needs ``tsa_validator`` (see ``verify_parsed``).
    """
    size = stream.seek(0, 2)
    located = locate_signed_message(stream, Span(0, size), limits)
    algorithm = located.signature.digest_algorithm
    digests = hash_ranges(
        stream,
        {
            "signed": ((located.signed.start, located.signed.end), hashable(algorithm)),
            "message": ((0, size), ("sha256",)),
        },
    )
    signature = verify_parsed(
        located.signature,
        digests.get(("signed", algorithm), b""),
        now,
        validator,
        tsa_validator=tsa_validator,
        tsa_valid_at=tsa_valid_at,
        allow_sha1=allow_sha1,
        limits=limits,
    )
    return UserMessageVerification(located.headers, signature, digests["message", "sha256"], size)
