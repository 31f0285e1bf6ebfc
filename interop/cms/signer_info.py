"""The mathematics of one SignerInfo: is it intact, and who made it (RFC 5652 §5.4, §5.6)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from interop.cms import keys
from interop.cms.parse import CERTIFICATES_KEPT, ParsedSignedData, aware_time, load_certificate
from interop.errors import CmsFormatError, translated


@dataclass(frozen=True, slots=True)
class SignerCheck:
    intact: bool
    signer: x509.Certificate | None
    signing_time: dt.datetime | None
    cades: bool  # carries a matching signing-certificate-v2 attribute
    detail: str
    # Every id-aa-signatureTimeStampToken value, in order (CAdES allows several).
    timestamp_tokens: tuple[cms.ContentInfo, ...] = ()
    signature: bytes = b""


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def _issuer(der: bytes) -> bytes:
    """The issuer name of the certificate encoded in ``der``, as cryptography encodes it.

    Kept, like the certificate itself (``load_certificate``): building the name and encoding
    it again costs more than the rest of finding the signer. Raises for a name cryptography
    cannot read, each time.
    """
    return load_certificate(der).issuer.public_bytes()


def _find_signer(parsed: ParsedSignedData) -> int | None:
    """The index in ``parsed.certificates`` of the one ``sid`` names, or None."""
    sid = parsed.signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        serial = wanted["serial_number"].native
        for i, cert in enumerate(parsed.certificates):
            # Byte equality first; RFC 5280 §7.1 name comparison only when the encodings differ.
            if cert.serial_number == serial:
                issuer = _issuer(parsed.certificate_ders[i])
                if issuer == wanted["issuer"].dump() or (
                    asn1_x509.Name.load(issuer) == wanted["issuer"]
                ):
                    return i
        return None
    for i, cert in enumerate(parsed.certificates):
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            continue
        if ski.value.digest == sid.chosen.native:
            return i
    return None


def check_signer(parsed: ParsedSignedData, content_digest: bytes) -> SignerCheck:
    """Check message-digest, content-type and the signature value; never raises for bad math.

    The second half of the CMS boundary (``ParsedSignedData.parse`` is the first): asn1crypto
    reads the signer's identifier, attributes and algorithm parameters only now, and
    cryptography a certificate's names and extensions, so whatever they raise on bytes that
    parsed but cannot be read becomes ``CmsFormatError``.
    """
    with translated(CmsFormatError, "the signer information cannot be read"):
        return _check_signer(parsed, content_digest)


def _check_signer(parsed: ParsedSignedData, content_digest: bytes) -> SignerCheck:
    info = parsed.signer_info
    found = _find_signer(parsed)
    signature = bytes(info["signature"].contents)
    if found is None:
        return SignerCheck(False, None, None, False, "the signer's certificate is not included")
    signer = parsed.certificates[found]
    attrs = info["signed_attrs"]
    if parsed.signed_attrs_der is None or len(attrs) == 0:
        # Without signed attributes neither CAdES nor our streaming hashing applies.
        return SignerCheck(False, signer, None, False, "the signature has no signed attributes")
    values: dict[str, list[Any]] = {}
    for attr in attrs:
        name = attr["type"].native
        if name in values:
            return SignerCheck(False, signer, None, False, f"signed attribute {name} is repeated")
        values[name] = list(attr["values"])
    content_type = values.get("content_type")
    if not content_type or content_type[0].native != parsed.content_type:
        return SignerCheck(
            False, signer, None, False, "the content-type attribute does not match the content"
        )
    digest_attr = values.get("message_digest")
    if not digest_attr or not hmac.compare_digest(
        bytes(digest_attr[0].native),
        content_digest,
    ):
        return SignerCheck(
            False,
            signer,
            None,
            False,
            "the content does not match the signed message-digest (it was changed after signing)",
        )
    signing_time = None
    if values.get("signing_time"):
        signing_time = aware_time(values["signing_time"][0].native, "signing-time")
    cades = False
    if values.get("signing_certificate_v2"):
        cert_ids = values["signing_certificate_v2"][0]["certs"]
        der = parsed.certificate_ders[found]  # as received: the hash is over these bytes
        first = cert_ids[0]
        algorithm = first["hash_algorithm"]["algorithm"].native
        if algorithm not in ("sha256", "sha384", "sha512") or not hmac.compare_digest(
            hashlib.new(algorithm, der).digest(), bytes(first["cert_hash"].native)
        ):
            return SignerCheck(
                False,
                signer,
                signing_time,
                False,
                "signing-certificate-v2 does not name the certificate that signed",
            )
        cades = True
    # RFC 5652 §5.4: the signature is over the DER of the attributes with an explicit SET OF tag.
    data = b"\x31" + parsed.signed_attrs_der[1:]
    if parsed.digest_algorithm not in ("sha1", "sha256", "sha384", "sha512"):
        return SignerCheck(
            False,
            signer,
            signing_time,
            cades,
            f"digest algorithm {parsed.digest_algorithm} is not supported",
        )
    if not keys.verify(
        signer.public_key(), signature, data, parsed.digest_algorithm, info["signature_algorithm"]
    ):
        return SignerCheck(
            False,
            signer,
            signing_time,
            cades,
            "the signature value does not verify with the signer's public key",
        )
    tokens: list[cms.ContentInfo] = []
    unsigned = info["unsigned_attrs"]
    if not isinstance(unsigned, core.Void):
        for attr in unsigned:
            if attr["type"].native == "signature_time_stamp_token":
                tokens.extend(attr["values"])
    return SignerCheck(True, signer, signing_time, cades, "intact", tuple(tokens), signature)
