"""XAdES-T: the signature time-stamp of an evidence signature (INTEROP-PROFILE.md §5, 1.1).

ETSI EN 319 132-1 §5.3 (XAdES 1.3.2 §7.3): ``xades:SignatureTimeStamp``, in
``xades:QualifyingProperties/xades:UnsignedProperties/xades:UnsignedSignatureProperties``,
holds RFC 3161 tokens over the ``ds:SignatureValue`` element (start and end tags included),
canonicalized with the method its ``ds:CanonicalizationMethod`` names, Canonical XML 1.0 when
it names none. It is made after the signature and is not covered by it, so adding it changes
nothing that the signature (or xmlsec1) checks. We write exclusive canonicalization, which
does not depend on the namespaces declared around the signature (as the EU's DSS does), and
read any of the six W3C methods.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable

from lxml import etree

from interop.cms.parse import content_info
from interop.errors import EvidenceFormatError, translated
from interop.evidence.codes import DS_NS
from interop.limits import Limits

XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_11 = "http://www.w3.org/2006/12/xml-c14n11"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
# Method → (exclusive, with comments). C14N 1.1 differs from 1.0 only in the xml:id and
# xml:base attributes inherited from ancestors, which no evidence signature carries; lxml has
# no 1.1, so a time-stamp's 1.1 is computed as 1.0. A document that needs the difference fails
# to verify: closed, not open.
_METHODS = {
    C14N_10: (False, False),
    C14N_10 + "#WithComments": (False, True),
    C14N_11: (False, False),
    C14N_11 + "#WithComments": (False, True),
    EXC_C14N: (True, False),
    EXC_C14N + "WithComments": (True, True),
}
CANONICALIZATION_METHODS = frozenset(_METHODS)
# XAdES 1.3.2 §7.1.4.1 EncapsulatedPKIDataType: DER unless the Encoding attribute says otherwise.
_DER = "http://uri.etsi.org/01903/v1.2.2#DER"

_X = f"{{{XADES_NS}}}"
_D = f"{{{DS_NS}}}"
_PATH = (  # the ancestors of a SignatureTimeStamp up to ds:Signature, nearest first
    _X + "UnsignedSignatureProperties",
    _X + "UnsignedProperties",
    _X + "QualifyingProperties",
    _D + "Object",
    _D + "Signature",
)


def canonical(element: etree._Element, method: str) -> bytes:
    exclusive, comments = _METHODS[method]
    data: bytes = etree.tostring(
        element, method="c14n", exclusive=exclusive, with_comments=comments
    )
    return data


def add_signature_timestamp(
    signature: etree._Element, timestamp: Callable[[bytes], bytes]
) -> etree._Element:
    """Add a ``SignatureTimeStamp`` to the XAdES ``signature``; returns it.

    ``timestamp`` gets the bytes to imprint (the canonical ``ds:SignatureValue``) and returns
    a DER TimeStampToken; it is called once.
    """
    value = signature.find(_D + "SignatureValue")
    qualifying = signature.find(f"{_D}Object/{_X}QualifyingProperties")
    if value is None or qualifying is None:
        raise ValueError("not a XAdES signature: no SignatureValue or QualifyingProperties")
    token = timestamp(canonical(value, EXC_C14N))
    unsigned = qualifying.find(_X + "UnsignedProperties")
    if unsigned is None:
        unsigned = etree.SubElement(qualifying, _X + "UnsignedProperties")
    properties = unsigned.find(_X + "UnsignedSignatureProperties")
    if properties is None:
        properties = etree.SubElement(unsigned, _X + "UnsignedSignatureProperties")
    count = len(properties.findall(_X + "SignatureTimeStamp"))
    stamp = etree.SubElement(
        properties,
        _X + "SignatureTimeStamp",
        Id=f"{signature.get('Id', 'Signature')}-SignatureTimeStamp{count + 1}",
    )
    etree.SubElement(stamp, _D + "CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(stamp, _X + "EncapsulatedTimeStamp").text = base64.b64encode(token).decode()
    return stamp


def signature_timestamps(signature: etree._Element, limits: Limits) -> list[tuple[bytes, bytes]]:
    """Each token of the signature's time-stamps, with the bytes it must stamp.

    Raises ``EvidenceFormatError`` for a time-stamp that is misplaced, of a kind we do not
    verify, or unreadable: a time-stamp present is verified, never skipped.
    """
    with translated(EvidenceFormatError, "an evidence signature time-stamp cannot be read"):
        return _signature_timestamps(signature, limits)


def _signature_timestamps(signature: etree._Element, limits: Limits) -> list[tuple[bytes, bytes]]:
    stamps = list(signature.iter(_X + "SignatureTimeStamp"))
    if not stamps:
        return []
    values = signature.findall(_D + "SignatureValue")
    if len(values) != 1:
        raise EvidenceFormatError("the evidence signature must have one ds:SignatureValue")
    found: list[tuple[bytes, bytes]] = []
    for stamp in stamps:
        ancestors = list(itertools.islice(stamp.iterancestors(), len(_PATH)))
        if tuple(a.tag for a in ancestors) != _PATH or ancestors[-1] is not signature:
            raise EvidenceFormatError(
                "a SignatureTimeStamp is not in the signature's UnsignedSignatureProperties"
            )
        method = C14N_10  # XAdES 1.3.2 §7.1.4.3: the default when none is named
        tokens: list[bytes] = []
        for child in stamp:
            if not isinstance(child.tag, str):  # a comment or processing instruction
                continue
            if child.tag == _D + "CanonicalizationMethod" and not tokens:
                method = child.get("Algorithm", "")
                if method not in _METHODS:
                    raise EvidenceFormatError(
                        f"the time-stamp's canonicalization method {method!r} is not supported"
                    )
            elif child.tag == _X + "EncapsulatedTimeStamp":
                if child.get("Encoding", _DER) != _DER:
                    raise EvidenceFormatError("an EncapsulatedTimeStamp that is not DER")
                tokens.append(base64.b64decode("".join((child.text or "").split()), validate=True))
            else:
                raise EvidenceFormatError(
                    f"a SignatureTimeStamp holding {etree.QName(child).localname} is not supported"
                )
        if not tokens:
            raise EvidenceFormatError("a SignatureTimeStamp holds no EncapsulatedTimeStamp")
        data = canonical(values[0], method)
        for token in tokens:
            content_info(token)  # an unreadable token makes the signature malformed
            found.append((token, data))
        if len(found) > limits.timestamps_per_signature:
            raise EvidenceFormatError(
                f"the evidence signature carries more than {limits.timestamps_per_signature} "
                "time-stamps"
            )
    return found
