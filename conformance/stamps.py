"""The signature time-stamps a target puts on what it signs, found by the suite itself and
judged by ``openssl ts -verify``.

XAdES-T (INTEROP-PROFILE.md §5; XAdES 1.3.2 §7.3): each ``xades:SignatureTimeStamp`` holds
RFC 3161 tokens whose message imprint is over the ``ds:SignatureValue`` element, canonicalized
with the method the time-stamp's own ``ds:CanonicalizationMethod`` names (Canonical XML 1.0
when it names none); lxml makes the canonical form here. CAdES-T (§3; RFC 5126 §5.11.5): the
unsigned attribute id-aa-signatureTimeStampToken of a SignerInfo is a token over the value of
that SignerInfo's ``signature`` field, read here with asn1crypto. The suite writes those bytes
and each token to files and lets OpenSSL say whether the token stamps them and chains to the
CA given. Nothing of the project's time-stamp code is used, so a fault it shares with the
target still shows.

Takes evidence XML or a DER CMS SignedData; promises one ``Stamp`` per token (with the bytes it
must stamp, or why they could not be had) and a ``ToolVerdict`` per ``openssl ts`` run.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import cms
from lxml import etree

from conformance import tools

DS = "{http://www.w3.org/2000/09/xmldsig#}"
XADES = "{http://uri.etsi.org/01903/v1.3.2#}"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_11 = "http://www.w3.org/2006/12/xml-c14n11"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
# Method → (exclusive, with comments). lxml has no Canonical XML 1.1, which differs from 1.0
# only in xml:id and xml:base inherited from ancestors (no evidence signature carries them),
# so 1.1 is made as 1.0: a document that needed the difference fails, it never passes wrongly.
METHODS = {
    C14N_10: (False, False),
    C14N_10 + "#WithComments": (False, True),
    C14N_11: (False, False),
    C14N_11 + "#WithComments": (False, True),
    EXC_C14N: (True, False),
    EXC_C14N + "WithComments": (True, True),
}


@dataclass(frozen=True, slots=True)
class Stamp:
    where: str  # "XAdES SignatureTimeStamp 1", "CAdES signatureTimeStampToken 1"
    data: bytes  # what the token's imprint must be over
    token: bytes  # the DER TimeStampToken
    problem: str | None = None  # why data or token could not be had


def xades_stamps(xml: bytes) -> list[Stamp]:
    """Every token of every ``xades:SignatureTimeStamp`` of the evidence's ``ds:Signature``."""
    root = tools.parse_xml(xml)
    signature = root.find(DS + "Signature") if root is not None else None
    if signature is None:
        return []
    values = signature.findall(DS + "SignatureValue")
    found: list[Stamp] = []
    for number, stamp in enumerate(signature.iter(XADES + "SignatureTimeStamp"), 1):
        where = f"XAdES SignatureTimeStamp {number}"
        method_node = stamp.find(DS + "CanonicalizationMethod")
        method = C14N_10 if method_node is None else method_node.get("Algorithm", "")
        if len(values) != 1 or method not in METHODS:
            problem = (
                f"canonicalization {method!r} is not a W3C method"
                if len(values) == 1
                else f"{len(values)} ds:SignatureValue elements"
            )
            found.append(Stamp(where, b"", b"", problem))
            continue
        exclusive, comments = METHODS[method]
        data = etree.tostring(values[0], method="c14n", exclusive=exclusive, with_comments=comments)
        tokens = stamp.findall(XADES + "EncapsulatedTimeStamp")
        if not tokens:
            found.append(Stamp(where, data, b"", "no EncapsulatedTimeStamp"))
        for token in tokens:
            try:
                der = base64.b64decode("".join((token.text or "").split()), validate=True)
            except binascii.Error as exc:
                found.append(Stamp(where, data, b"", f"EncapsulatedTimeStamp not base64: {exc}"))
                continue
            found.append(Stamp(where, bytes(data), der))
    return found


def cades_stamps(signed_data_der: bytes) -> list[Stamp]:
    """Every id-aa-signatureTimeStampToken of every SignerInfo of a DER ContentInfo."""
    try:
        info = cms.ContentInfo.load(signed_data_der, strict=True)
        signers = list(info["content"]["signer_infos"])
    except (ValueError, KeyError, TypeError) as exc:
        return [Stamp("CAdES", b"", b"", f"smime.p7s is not a DER SignedData: {exc}")]
    found: list[Stamp] = []
    for signer in signers:
        attributes = signer["unsigned_attrs"]
        if attributes.native is None:
            continue
        value = signer["signature"].native
        for attribute in attributes:
            if attribute["type"].dotted != "1.2.840.113549.1.9.16.2.14":
                continue
            for token in attribute["values"]:
                where = f"CAdES signatureTimeStampToken {len(found) + 1}"
                found.append(Stamp(where, bytes(value), token.dump()))
    return found


def openssl_ts_verify(stamp: Stamp, ca_file: Path) -> tools.ToolVerdict:
    """``openssl ts -verify -data FILE -in TOKEN -token_in -CAfile CA``: the token's imprint
    is over ``stamp.data`` and its TSA chains to ``ca_file``."""
    if stamp.problem is not None:
        return tools.ToolVerdict(False, f"{stamp.where}: {stamp.problem}")
    with tempfile.TemporaryDirectory(prefix="kep-conformance-") as folder:
        data, token = Path(folder) / "stamped", Path(folder) / "token.der"
        data.write_bytes(stamp.data)
        token.write_bytes(stamp.token)
        done = tools.run_tool(
            [
                tools.need("openssl"),
                "ts",
                "-verify",
                "-data",
                str(data),
                "-in",
                str(token),
                "-token_in",
                "-CAfile",
                str(ca_file),
            ]
        )
    said = tools.said(done)
    ok = done.returncode == 0 and "Verification: OK" in said
    return tools.ToolVerdict(ok, f"openssl ts -verify ({stamp.where}): {said}")
