"""Read a CMS SignedData safely: anything asn1crypto or cryptography cannot read becomes
``CmsFormatError``.

Only the outer structure and the certificates are read here; asn1crypto parses the rest lazily,
so ``interop.cms.signer_info.check_signer`` is the second half of this boundary.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms, core
from cryptography import x509

from interop.errors import CmsFormatError, translated
from interop.limits import DEFAULT_LIMITS, Limits

_UNREADABLE = "the signature is not readable DER CMS"

# Certificates kept read, by their DER. A gateway sees the same ones again and again (each
# provider's process and TSA certificates and their CAs in every signature and token, a user's
# in each of her messages); a few hundred cover a busy hour, and 1,024 of a few KiB each stay
# within a few MiB.
CERTIFICATES_KEPT = 1024


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def load_certificate(der: bytes) -> x509.Certificate:
    """The certificate encoded in ``der``: one object, read once, for the same bytes.

    What cryptography reads from bytes depends on nothing else, so every check made on the
    object gives the answer it gives on a fresh one; a certificate it cannot read raises each
    time (``lru_cache`` keeps no exception). The objects are immutable and shared by threads.
    """
    return x509.load_der_x509_certificate(der)


def aware_time(value: Any, what: str) -> dt.datetime:
    """A signing or time-stamp time as an aware datetime.

    DER times end in Z (X.690 §11.7, §11.8); asn1crypto hands a GeneralizedTime without one
    back naive, and year 0 as its own ``extended_datetime``: neither compares with ``now``.
    """
    if type(value) is not dt.datetime or value.tzinfo is None:
        raise CmsFormatError(f"{what} {value!s:.40} is not a UTC time")
    return value


@dataclass(frozen=True, slots=True)
class ParsedSignedData:
    signed_data: cms.SignedData
    signer_info: cms.SignerInfo
    certificates: tuple[x509.Certificate, ...]
    certificate_ders: tuple[bytes, ...]  # each certificate exactly as received, same order
    digest_algorithm: str
    content_type: str
    encapsulated: bytes | None  # eContent when the content travels inside (time-stamp tokens)
    # The signed attributes exactly as received: the signature covers these bytes, so they are
    # taken before anything else touches the structure (asn1crypto re-encodes what it mutates).
    signed_attrs_der: bytes | None

    @classmethod
    def parse(cls, der: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedSignedData:
        if len(der) > limits.signature_part:
            raise CmsFormatError(f"the signature is larger than {limits.signature_part} bytes")
        with translated(CmsFormatError, _UNREADABLE):
            info = cms.ContentInfo.load(der, strict=True)
        return cls.from_content_info(info, limits)

    @classmethod
    def from_content_info(
        cls, info: cms.ContentInfo, limits: Limits = DEFAULT_LIMITS
    ) -> ParsedSignedData:
        with translated(CmsFormatError, _UNREADABLE):
            return cls._from_content_info(info, limits)

    @classmethod
    def _from_content_info(cls, info: cms.ContentInfo, limits: Limits) -> ParsedSignedData:
        if info["content_type"].native != "signed_data":
            raise CmsFormatError(f"expected CMS SignedData, found {info['content_type'].native}")
        signed_data = info["content"]
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise CmsFormatError(f"expected one signer, found {len(signer_infos)}")
        signer_info = signer_infos[0]
        attrs = signer_info["signed_attrs"]
        signed_attrs_der = None if isinstance(attrs, core.Void) else attrs.dump()
        raw_certs = signed_data["certificates"]
        if isinstance(raw_certs, core.Void) or len(raw_certs) == 0:
            raise CmsFormatError("the signature carries no certificates")
        if len(raw_certs) > limits.certificates_per_signature:
            raise CmsFormatError(
                f"the signature carries more than {limits.certificates_per_signature} certificates"
            )
        ders = tuple(
            choice.chosen.dump()
            for choice in raw_certs
            # attribute/other certificates play no part in KEP
            if choice.name == "certificate"
        )
        certificates = tuple(load_certificate(der) for der in ders)
        encap = signed_data["encap_content_info"]
        content = encap["content"]
        encapsulated = None if isinstance(content, core.Void) else bytes(content.contents)
        return cls(
            signed_data,
            signer_info,
            certificates,
            ders,
            signer_info["digest_algorithm"]["algorithm"].native,
            encap["content_type"].native,
            encapsulated,
            signed_attrs_der,
        )
