"""Builders of malformed inputs shared by the tests (and the fuzz seeds)."""

from __future__ import annotations

from asn1crypto import cms


def changed(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return bytes(out)


def break_signer_issuer(der: bytes, how: str) -> bytes:
    """``der`` with one byte changed in the common name of the signer's issuer (its sid).

    The sid is outside what the signature covers, and its issuer is read only when a
    certificate is matched against it: the signature parses, then fails when checked.
    """
    sid = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["sid"].chosen
    sid_der = sid.dump()
    issuer_at = der.index(sid_der) + sid_der.index(sid["issuer"].dump())
    issuer = sid["issuer"].dump()
    tag_at = issuer_at + issuer.rindex(b"\x06\x03\x55\x04\x03") + 5  # id-at-commonName
    if how == "length":  # ValueError: asn1crypto reads past the end of the name
        return changed(der, tag_at + 1, 0x7F)
    last = tag_at + 1 + der[tag_at + 1]  # UnicodeDecodeError: not UTF-8 any more
    return changed(der, last, 0xFF)
