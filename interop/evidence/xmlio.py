"""Write evidence XML and read it back safely (INTEROP-PROFILE.md §5).

Reading refuses DTDs, entity declarations and external references before and after lxml sees
the bytes, bounds the size, and names the missing or malformed element when content is wrong.
Each reader (``safe_parse``, ``from_element``, ``issuer_of``) is a boundary: whatever lxml,
base64, ``int`` or ``datetime`` raise on the content becomes ``EvidenceFormatError``.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from lxml import etree

from interop.errors import EvidenceFormatError, translated
from interop.evidence.codes import DS_NS, KEP_NS, REM_NS, SHA256_URI, Event, EvidenceType
from interop.evidence.model import EventReason, Evidence, MessageDetails
from interop.limits import DEFAULT_LIMITS, Limits
from interop.reasons import Reason

NSMAP = {"rem": REM_NS, "ds": DS_NS, "kep": KEP_NS}
_R = f"{{{REM_NS}}}"
_D = f"{{{DS_NS}}}"
_K = f"{{{KEP_NS}}}"
_MAILTO = "mailto:"

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
)
_FORBIDDEN_MARKUP = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST", b'SYSTEM "')


def _time(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    node = etree.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node


def _entity(parent: etree._Element, tag: str, address: str) -> etree._Element:
    node = _sub(parent, tag)
    _sub(node, _R + "AttributedElectronicAddress", _MAILTO + address)
    return node


def to_element(evidence: Evidence) -> etree._Element:
    """The unsigned evidence element, children in XSD order."""
    root = etree.Element(_R + evidence.type.value, {"version": "2"}, nsmap=NSMAP)
    _sub(root, _R + "EventCode", evidence.event.uri)
    if evidence.reasons:
        reasons = _sub(root, _R + "EventReasons")
        for item in evidence.reasons:
            node = _sub(reasons, _R + "EventReason")
            _sub(node, _R + "Code", item.reason.uri)
            if item.details:
                _sub(node, _R + "Details", item.details)
    _sub(root, _R + "EvidenceIdentifier", evidence.identifier)
    issuer = _entity(root, _R + "EvidenceIssuerDetails", evidence.issuer)
    if evidence.issuer_certificate is not None:
        details = _sub(issuer, _R + "CertificateDetails")
        _sub(
            details, _R + "X509Certificate", base64.b64encode(evidence.issuer_certificate).decode()
        )
    _sub(root, _R + "EventTime", _time(evidence.event_time))
    _sub(root, _R + "SubmissionTime", _time(evidence.submission_time))
    _entity(root, _R + "SenderDetails", evidence.sender)
    recipients = _sub(root, _R + "RecipientsDetails")
    for address in evidence.recipients:
        _entity(recipients, _R + "EntityDetails", address)
    if evidence.refers_to_recipient is not None:
        _sub(root, _R + "EvidenceRefersToRecipient", str(evidence.refers_to_recipient))
    message = _sub(root, _R + "SenderMessageDetails", isNotification="false")
    _sub(message, _R + "MessageSubject", evidence.message.subject)
    if evidence.message.ua_message_id:
        _sub(message, _R + "UAMessageIdentifier", evidence.message.ua_message_id)
    _sub(message, _R + "MessageIdentifierByREMMD", evidence.message.remmd_message_id)
    _sub(message, _D + "DigestMethod", Algorithm=SHA256_URI)
    _sub(message, _D + "DigestValue", base64.b64encode(evidence.message.digest).decode())
    extensions = []
    if evidence.delil_turu is not None:
        extensions.append((_K + "DelilTuru", str(evidence.delil_turu)))
    if evidence.teblig_zamani is not None:
        extensions.append((_K + "TebligZamani", _time(evidence.teblig_zamani)))
    if extensions:
        node = _sub(root, _R + "Extensions")
        for tag, text in extensions:
            _sub(_sub(node, _R + "Extension", isCritical="false"), tag, text)
    return root


def to_bytes(evidence: Evidence) -> bytes:
    return etree.tostring(to_element(evidence), xml_declaration=True, encoding="UTF-8")


def safe_parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> etree._Element:
    """Parse evidence XML with DTDs, entities and network refused; raises EvidenceFormatError."""
    if len(data) > limits.evidence_xml:
        raise EvidenceFormatError(f"the evidence XML is larger than {limits.evidence_xml} bytes")
    for marker in _FORBIDDEN_MARKUP:
        if marker in data:
            raise EvidenceFormatError(
                "the evidence XML holds a DTD, an entity declaration or an external reference; "
                "these are refused"
            )
    with translated(EvidenceFormatError, "the evidence is not well-formed XML"):
        return _checked_tree(etree.fromstring(data, _PARSER))


def _checked_tree(root: etree._Element) -> etree._Element:
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise EvidenceFormatError("the evidence XML holds a DTD; DTDs are refused")
    # Only nodes of these two kinds are visited (lxml filters them in C).
    if next(root.iter(etree.Entity, etree.ProcessingInstruction), None) is not None:
        raise EvidenceFormatError("the evidence XML holds entities or processing instructions")
    return root


def _one(parent: etree._Element, tag: str, what: str) -> etree._Element:
    found = parent.findall(tag)
    if len(found) != 1:
        raise EvidenceFormatError(f"the evidence {'lacks' if not found else 'repeats'} {what}")
    return found[0]


def _opt(parent: etree._Element, tag: str) -> etree._Element | None:
    found = parent.findall(tag)
    if len(found) > 1:
        raise EvidenceFormatError(f"the evidence repeats {tag.rsplit('}', maxsplit=1)[-1]}")
    return found[0] if found else None


def _text(node: etree._Element | None) -> str:
    return "" if node is None or node.text is None else node.text.strip()


def _address(entity: etree._Element, what: str) -> str:
    node = _one(entity, _R + "AttributedElectronicAddress", f"{what} AttributedElectronicAddress")
    value = _text(node)
    if value[: len(_MAILTO)].lower() == _MAILTO:
        value = value[len(_MAILTO) :]
    if not value:
        raise EvidenceFormatError(f"the evidence has an empty {what} address")
    return value


def xs_datetime(text: str, what: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EvidenceFormatError(f"{what} {text!r} is not an xs:dateTime") from exc
    if value.tzinfo is None:
        raise EvidenceFormatError(f"{what} {text!r} has no time zone (UTC is required)")
    return value


def issuer_of(root: etree._Element) -> str:
    """The issuer's address, which says whose certificates must have signed the evidence."""
    with translated(EvidenceFormatError, "the evidence issuer is unreadable"):
        evidence_type_of(root)
        return _address(_one(root, _R + "EvidenceIssuerDetails", "EvidenceIssuerDetails"), "issuer")


def evidence_type_of(root: etree._Element) -> EvidenceType:
    with translated(EvidenceFormatError, "the evidence root is unreadable"):
        qname = etree.QName(root)
    if qname.namespace != REM_NS:
        raise EvidenceFormatError(
            f"the evidence root is in namespace {qname.namespace!r}, not {REM_NS!r}"
        )
    try:
        return EvidenceType.from_element_name(qname.localname)
    except ValueError as exc:
        raise EvidenceFormatError(str(exc)) from exc


def from_element(root: etree._Element) -> Evidence:
    """Read an evidence element (signature, if any, ignored here: see ``xades``)."""
    with translated(EvidenceFormatError, "the evidence content is malformed"):
        return _from_element(root)


def _from_element(root: etree._Element) -> Evidence:
    kind = evidence_type_of(root)
    event = Event.from_uri(_text(_one(root, _R + "EventCode", "EventCode")))
    reasons = []
    reasons_node = _opt(root, _R + "EventReasons")
    if reasons_node is not None:
        for node in reasons_node.findall(_R + "EventReason"):
            code = _text(_one(node, _R + "Code", "EventReason Code"))
            reasons.append(EventReason(Reason.from_uri(code), _text(_opt(node, _R + "Details"))))
    issuer_node = _one(root, _R + "EvidenceIssuerDetails", "EvidenceIssuerDetails")
    certificate = None
    cert_node = issuer_node.find(f"{_R}CertificateDetails/{_R}X509Certificate")
    if cert_node is not None:
        certificate = base64.b64decode("".join(_text(cert_node).split()), validate=True)
    recipients_node = _one(root, _R + "RecipientsDetails", "RecipientsDetails")
    refers = _opt(root, _R + "EvidenceRefersToRecipient")
    message_node = _one(root, _R + "SenderMessageDetails", "SenderMessageDetails")
    method = _one(message_node, _D + "DigestMethod", "ds:DigestMethod")
    if method.get("Algorithm") != SHA256_URI:
        raise EvidenceFormatError(
            f"the message digest method {method.get('Algorithm')!r} is not SHA-256"
        )
    digest = base64.b64decode(
        "".join(_text(_one(message_node, _D + "DigestValue", "ds:DigestValue")).split()),
        validate=True,
    )
    extensions: dict[str, str] = {}
    ext_node = _opt(root, _R + "Extensions")
    if ext_node is not None:
        for ext in ext_node.findall(_R + "Extension"):
            for child in ext:
                if isinstance(child.tag, str) and child.tag.startswith(_K):
                    extensions[child.tag[len(_K) :]] = _text(child)
    delil_turu = extensions.get("DelilTuru")
    teblig = extensions.get("TebligZamani")
    submission = _opt(root, _R + "SubmissionTime")
    event_time = xs_datetime(_text(_one(root, _R + "EventTime", "EventTime")), "EventTime")
    return Evidence(
        type=kind,
        event=event,
        identifier=_text(_one(root, _R + "EvidenceIdentifier", "EvidenceIdentifier")),
        issuer=_address(issuer_node, "issuer"),
        event_time=event_time,
        submission_time=(
            xs_datetime(_text(submission), "SubmissionTime")
            if submission is not None
            else event_time
        ),
        sender=_address(_one(root, _R + "SenderDetails", "SenderDetails"), "sender"),
        recipients=tuple(
            _address(e, "recipient") for e in recipients_node.findall(_R + "EntityDetails")
        ),
        message=MessageDetails(
            subject=_text(_one(message_node, _R + "MessageSubject", "MessageSubject")),
            ua_message_id=_text(_opt(message_node, _R + "UAMessageIdentifier")),
            remmd_message_id=_text(
                _one(message_node, _R + "MessageIdentifierByREMMD", "MessageIdentifierByREMMD")
            ),
            digest=digest,
        ),
        reasons=tuple(reasons),
        refers_to_recipient=int(_text(refers)) if refers is not None else None,
        issuer_certificate=certificate,
        teblig_zamani=xs_datetime(teblig, "TebligZamani") if teblig else None,
        delil_turu=int(delil_turu) if delil_turu else None,
    )


@dataclass(frozen=True, slots=True)
class ReadEvidence:
    """Evidence XML parsed (``safe_parse``) and its content read from that very tree
    (``from_element``): what a verifier of the same bytes need not do again."""

    root: etree._Element
    evidence: Evidence


def read(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ReadEvidence:
    root = safe_parse(data, limits)
    return ReadEvidence(root, from_element(root))


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Evidence:
    return read(data, limits).evidence
