"""The evidence the target returns and the Evidence envelope around it (INTEROP-PROFILE.md
§3, §5): every field §5 requires, read from the XML itself rather than through the project's
model; the envelope's MIME tree and header fields as Python's ``email`` reads them; the CMS
signature's CAdES attributes as asn1crypto reads them; and the time-stamps."""

from __future__ import annotations

import base64
import email.errors
import email.header
import io
import re

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conformance import stamps, tools
from conformance.cases.common import (
    DELIVERY,
    REASON_PREFIXES,
    RELAY,
    delivered,
    one,
    refused,
)
from conformance.dispatch import Outgoing
from conformance.registry import case
from conformance.session import EvidenceIn, Session
from interop.envelope.verify import verify_envelope

REM = "{http://uri.etsi.org/02640/v2#}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
XADES = "{http://uri.etsi.org/01903/v1.3.2#}"
KEP = "{urn:kep:interop:1}"
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
EVENT_URIS = ("http:uri.etsi.org/02640/Event#", "http://uri.etsi.org/02640/Event#")
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def _text(root: object, path: str) -> str | None:
    node = root.find(path)  # type: ignore[attr-defined]
    return None if node is None or node.text is None else str(node.text).strip()


def check_fields(
    s: Session, item: EvidenceIn, about: Outgoing, event: str, delil_turu: str
) -> None:
    """Every element §5 requires, in the XML as the target wrote it."""
    name = item.label
    s.require(f"{name}: delil.xml present", item.xml is not None, item.problem or "")
    assert item.xml is not None
    root = tools.parse_xml(item.xml)
    s.require(f"{name}: well-formed XML", root is not None, "")
    assert root is not None
    s.check(f"{name}: root {item.kind} in the v2 namespace", root.tag == REM + item.kind, root.tag)
    s.check(f'{name}: version="2"', root.get("version") == "2", str(root.get("version")))
    code = _text(root, REM + "EventCode") or ""
    s.check(
        f"{name}: EventCode http:uri.etsi.org/02640/Event#{event}",
        any(code == prefix + event for prefix in EVENT_URIS),
        code,
    )
    identifier = _text(root, REM + "EvidenceIdentifier") or ""
    s.check(f"{name}: EvidenceIdentifier present", bool(identifier), identifier)
    s.check(
        f"{name}: X-REM-Evidence-Identifier = EvidenceIdentifier (§3)",
        item.received.header("X-REM-Evidence-Identifier") == identifier,
        str(item.received.header("X-REM-Evidence-Identifier")),
    )
    issuer = _text(root, f"{REM}EvidenceIssuerDetails/{REM}AttributedElectronicAddress") or ""
    s.check(
        f"{name}: EvidenceIssuerDetails mailto:delil@<target domain>",
        issuer.lower() == f"mailto:delil@{s.domain(s.target)}",
        issuer,
    )
    certificate = _text(
        root, f"{REM}EvidenceIssuerDetails/{REM}CertificateDetails/{REM}X509Certificate"
    )
    s.check(f"{name}: EvidenceIssuerDetails/CertificateDetails/X509Certificate", bool(certificate))
    if certificate:
        _issuer_certificate(s, name, certificate)
    for element in ("EventTime", "SubmissionTime"):
        value = _text(root, REM + element) or ""
        s.check(f"{name}: {element} in UTC", bool(UTC_TIME.match(value)), value)
    sender = _text(root, f"{REM}SenderDetails/{REM}AttributedElectronicAddress") or ""
    s.check(f"{name}: SenderDetails", sender.lower() == f"mailto:{about.sender}".lower(), sender)
    recipients = [
        (node.text or "").strip()
        for node in root.findall(
            f"{REM}RecipientsDetails/{REM}EntityDetails/{REM}AttributedElectronicAddress"
        )
    ]
    s.check(
        f"{name}: RecipientsDetails, all recipients in order",
        [r.lower() for r in recipients] == [f"mailto:{r}".lower() for r in about.recipients],
        ", ".join(recipients),
    )
    refers = _text(root, REM + "EvidenceRefersToRecipient")
    s.check(
        f"{name}: EvidenceRefersToRecipient (1-based)",
        refers is not None and refers.isdigit() and 1 <= int(refers) <= len(about.recipients),
        str(refers),
    )
    details = root.find(REM + "SenderMessageDetails")
    s.require(f"{name}: SenderMessageDetails", details is not None, "")
    assert details is not None
    s.check(
        f'{name}: SenderMessageDetails isNotification="false"',
        details.get("isNotification") == "false",
        str(details.get("isNotification")),
    )
    s.check(
        f"{name}: MessageSubject",
        _text(details, REM + "MessageSubject") == about.subject,
        str(_text(details, REM + "MessageSubject")),
    )
    s.check(
        f"{name}: UAMessageIdentifier (the original's Message-ID)",
        _text(details, REM + "UAMessageIdentifier") == about.ua_message_id,
        str(_text(details, REM + "UAMessageIdentifier")),
    )
    s.check(
        f"{name}: MessageIdentifierByREMMD",
        _text(details, REM + "MessageIdentifierByREMMD") == about.remmd,
        str(_text(details, REM + "MessageIdentifierByREMMD")),
    )
    method = details.find(DS + "DigestMethod")
    s.check(
        f"{name}: ds:DigestMethod SHA-256",
        method is not None and method.get("Algorithm") == SHA256_URI,
        str(method.get("Algorithm") if method is not None else None),
    )
    value = _text(details, DS + "DigestValue") or ""
    s.check(
        f"{name}: ds:DigestValue is the SHA-256 of the original",
        value == base64.b64encode(about.digest).decode(),
        value,
    )
    turu = _text(root, f"{REM}Extensions/{REM}Extension/{KEP}DelilTuru")
    s.check(f"{name}: DelilTuru {delil_turu} (KEP extension)", turu == delil_turu, str(turu))
    last = root[len(root) - 1] if len(root) else None
    s.check(
        f"{name}: ds:Signature is the last child (enveloped XAdES)",
        last is not None and last.tag == DS + "Signature",
        str(last.tag if last is not None else None),
    )


def _issuer_certificate(s: Session, name: str, b64: str) -> None:
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode("".join(b64.split())))
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except (ValueError, x509.ExtensionNotFound) as exc:
        s.check(f"{name}: issuer certificate readable, with a dNSName", False, str(exc))
        return
    s.check(
        f"{name}: issuer certificate's dNSName is the target's domain (§1)",
        s.domain(s.target) in names,
        ", ".join(names),
    )


@case(
    "KEP-EVF-01",
    "RelayREMMDAcceptanceRejection Acceptance holds every field §5 requires",
    section="§5",
    etsi="EVF-RELACC",
    rule="Required content: EvidenceIdentifier, EvidenceIssuerDetails (mailto:delil@<issuer "
    "domain> and CertificateDetails/X509Certificate), EventTime (UTC), SubmissionTime, "
    "SenderDetails, RecipientsDetails (all recipients, in order), EvidenceRefersToRecipient, "
    'SenderMessageDetails isNotification="false" with MessageSubject, UAMessageIdentifier, '
    "MessageIdentifierByREMMD, ds:DigestMethod/ds:DigestValue (SHA-256 of the original); "
    "DelilTuru.",
)
async def relay_acceptance_fields(s: Session) -> None:
    outgoing, came = await delivered(s)
    check_fields(s, one(came, RELAY, "Acceptance", 1), outgoing, "Acceptance", "20")


@case(
    "KEP-EVF-02",
    "DeliveryNonDeliveryToRecipient Delivery holds every field §5 requires",
    section="§5",
    etsi="EVF-DELREC",
    rule="The same required content as every evidence (§5), DelilTuru 40 for Delivery.",
)
async def delivery_fields(s: Session) -> None:
    outgoing, came = await delivered(s)
    check_fields(s, one(came, DELIVERY, "Delivery", 1), outgoing, "Delivery", "40")


@case(
    "KEP-EVF-03",
    "Rejection evidence carries a §6 reason in the standard's URI form",
    section="§5, §6",
    etsi="EVF-RELACC",
    rule="EventReasons/EventReason/Code: http:uri.etsi.org/REM/EventReason#<Name> with names "
    "from section 6, Details free text.",
)
async def rejection_reason(s: Session) -> None:
    outgoing = s.dispatch((s.unknown_recipient,))
    await refused(s, outgoing, "unknown recipient", ("UnknownRecipient",))
    came = await s.evidence(outgoing, [(RELAY, "Rejection", 1)], timeout=0)
    if not came:
        return  # refused at SMTP: no evidence to read (refused() judged that)
    item = came[0]
    check_fields(s, item, outgoing, "Rejection", "21")
    codes = reason_codes(item)
    s.check(
        "EventReason Code http:uri.etsi.org/REM/EventReason#UnknownRecipient",
        any(c in [p + "UnknownRecipient" for p in REASON_PREFIXES] for c in codes),
        ", ".join(codes) or "no EventReason",
    )


def reason_codes(item: EvidenceIn) -> list[str]:
    """The EventReason Codes as written in the XML (not through the project's model)."""
    root = tools.parse_xml(item.xml or b"")
    if root is None:
        return []
    return [
        (node.text or "").strip()
        for node in root.findall(f"{REM}EventReasons/{REM}EventReason/{REM}Code")
    ]


@case(
    "KEP-SIG-01",
    "evidence is signed with enveloped XAdES by the target's process certificate",
    section="§1, §5",
    etsi="SIG-EVXADES",
    rule="Signature: enveloped XAdES ds:Signature as the last child, made with the issuer's "
    "process certificate (SHA-256; RSA or ECDSA): XAdES-BES. Validate against the XSD with the "
    "ds:Signature subtree removed, and verify the signature separately.",
)
async def xades(s: Session) -> None:
    _outgoing, came = await delivered(s)
    for item in came:
        root = tools.parse_xml(item.xml or b"")
        s.require(f"{item.label}: XML", root is not None, "")
        assert root is not None
        signature = root.find(DS + "Signature")
        s.check(f"{item.label}: one ds:Signature", len(root.findall(DS + "Signature")) == 1)
        if signature is None:
            continue
        digests = {m.get("Algorithm") for m in signature.iter(DS + "DigestMethod")}
        s.check(
            f"{item.label}: SHA-256 or stronger digests",
            bool(digests)
            and all("sha256" in d or "sha384" in d or "sha512" in d for d in digests if d),
            ", ".join(sorted(d for d in digests if d)),
        )
        signed_properties = signature.find(f".//{XADES}SignedProperties")
        s.check(f"{item.label}: xades:SignedProperties (XAdES-BES)", signed_properties is not None)
        v2 = signature.find(f".//{XADES}SigningCertificateV2")
        v1 = signature.find(f".//{XADES}SigningCertificate")
        s.check(f"{item.label}: xades:SigningCertificate(V2)", v2 is not None or v1 is not None)
        s.check(
            f"{item.label}: xades:SigningTime",
            signature.find(f".//{XADES}SigningTime") is not None,
        )


@case(
    "KEP-SIG-02",
    "evidence is XAdES-T: a signature time-stamp that verifies",
    section="§5, §1",
    etsi="SIG-EVXADES",
    rule="plus (1.1) a SignatureTimeStamp in UnsignedSignatureProperties (XAdES-T) from the "
    "provider's RFC 3161 time-stamping authority whenever one is configured, which a "
    "production configuration must have.",
    required=False,
)
async def xades_t(s: Session) -> None:
    outgoing, came = await delivered(s)
    for item in came:
        root = tools.parse_xml(item.xml or b"")
        stamp = root.find(f".//{XADES}SignatureTimeStamp") if root is not None else None
        s.check(f"{item.label}: xades:SignatureTimeStamp present", stamp is not None)
        result = verify_envelope(
            io.BytesIO(item.received.data), s.pki.verifiers, s.now(), peer=s.target
        )
        timestamp = result.evidence.timestamp if result.evidence else None
        s.check(
            f"{item.label}: the time-stamp verifies (project library)",
            timestamp is not None and timestamp.ok,
            timestamp.detail if timestamp else "none",
        )
        _openssl_ts(s, item.label, stamps.xades_stamps(item.xml or b""), "over ds:SignatureValue")
    del outgoing


def _openssl_ts(s: Session, label: str, found: list[stamps.Stamp], what: str) -> None:
    """Each token verified by ``openssl ts`` over the bytes the suite computed; none is a
    failure (the case is about a time-stamp being there)."""
    ca = s.pki.pem("ca/process-ca.crt")
    verdicts = [stamps.openssl_ts_verify(stamp, ca) for stamp in found]
    s.check(
        f"{label}: each time-stamp token {what} verifies (openssl ts)",
        bool(verdicts) and all(v.ok for v in verdicts),
        "; ".join(v.detail for v in verdicts) or "no time-stamp token",
    )


@case(
    "KEP-SIG-03",
    "smime.p7s is CAdES-BES by the target's process certificate, with its chain",
    section="§3",
    etsi="SIG-SMIME",
    rule="smime.p7s is a detached CMS SignedData (CAdES-BES: signed attributes content-type, "
    "message-digest, signing-time, signing-certificate-v2) over the exact bytes of the first "
    "part, canonical CRLF. Signer: the issuing provider's process certificate, included with "
    "its chain.",
)
async def cades(s: Session) -> None:
    _outgoing, came = await delivered(s)
    for item in came:
        der = tools.smime_signature(item.received.data)
        s.require(f"{item.label}: smime.p7s present", der is not None)
        assert der is not None
        try:
            info = cms.ContentInfo.load(der, strict=True)
            signed = info["content"]
            signer = signed["signer_infos"][0]
            names = {a["type"].native for a in signer["signed_attrs"]}
            certificates = [c.chosen.dump() for c in signed["certificates"]]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            s.check(f"{item.label}: smime.p7s is DER CMS SignedData", False, str(exc))
            continue
        s.check(
            f"{item.label}: detached (no encapsulated content)",
            signed["encap_content_info"]["content"].native is None,
        )
        for attribute in (
            "content_type",
            "message_digest",
            "signing_time",
            "signing_certificate_v2",
        ):
            s.check(
                f"{item.label}: signed attribute {attribute}",
                attribute in names,
                ", ".join(sorted(names)),
            )
        s.check(
            f"{item.label}: digest SHA-256 or stronger",
            signer["digest_algorithm"]["algorithm"].native in ("sha256", "sha384", "sha512"),
            str(signer["digest_algorithm"]["algorithm"].native),
        )
        leaves = [x509.load_der_x509_certificate(c) for c in certificates]
        domains = []
        for certificate in leaves:
            try:
                san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                domains += san.value.get_values_for_type(x509.DNSName)
            except x509.ExtensionNotFound:
                continue
        s.check(
            f"{item.label}: the target's process certificate is included",
            s.domain(s.target) in domains,
            ", ".join(domains),
        )
        ca = s.pki.dev.process_ca.certificate.public_bytes(serialization.Encoding.DER)
        s.check(
            f"{item.label}: its chain is included (more than the leaf)",
            len(certificates) >= 2 or ca in certificates,
            f"{len(certificates)} certificate(s)",
        )


@case(
    "KEP-SIG-04",
    "smime.p7s carries a signature time-stamp that verifies (CAdES-T)",
    section="§3",
    etsi="SIG-SMIME",
    rule="A signature time-stamp (RFC 3161 token as unsigned attribute "
    "id-aa-signatureTimeStampToken, CAdES-T) SHOULD be added when a TSA is configured and MUST "
    "be verified when present.",
    required=False,
)
async def cades_t(s: Session) -> None:
    _outgoing, came = await delivered(s)
    for item in came:
        result = verify_envelope(
            io.BytesIO(item.received.data), s.pki.verifiers, s.now(), peer=s.target
        )
        stamp = result.envelope_signature.timestamp if result.envelope_signature else None
        s.check(
            f"{item.label}: signature time-stamp present and valid (project library)",
            stamp is not None and stamp.ok,
            stamp.detail if stamp else "no id-aa-signatureTimeStampToken",
        )
        der = tools.smime_signature(item.received.data)
        _openssl_ts(
            s, item.label, stamps.cades_stamps(der or b""), "over the SignerInfo's signature"
        )


@case(
    "KEP-MSGF-01",
    "the Evidence envelope has the §3 MIME structure",
    section="§3",
    etsi="MSGF-EVIDENCE",
    rule='multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256 ├── '
    "multipart/mixed (multipart/alternative text/plain and text/html utf-8; application/xml "
    'delil.xml) └── application/pkcs7-signature; name="smime.p7s". Evidence messages carry no '
    "original.",
)
async def evidence_structure(s: Session) -> None:
    _outgoing, came = await delivered(s)
    for item in came:
        message = tools.mime(item.received.data)
        label = item.label
        s.check(
            f"{label}: multipart/signed",
            message.get_content_type() == "multipart/signed",
            message.get_content_type(),
        )
        s.check(
            f'{label}: protocol="application/pkcs7-signature"',
            str(message.get_param("protocol") or "").lower()
            in (
                "application/pkcs7-signature",
                "application/x-pkcs7-signature",
            ),
            str(message.get_param("protocol")),
        )
        s.check(
            f"{label}: micalg=sha-256",
            str(message.get_param("micalg") or "").lower() == "sha-256",
            str(message.get_param("micalg")),
        )
        parts = tools.subparts(message)
        s.require(f"{label}: two parts", len(parts) == 2, f"{len(parts)} parts")
        first, second = parts
        s.check(
            f"{label}: first part multipart/mixed", first.get_content_type() == "multipart/mixed"
        )
        s.check(
            f"{label}: second part smime.p7s",
            second.get_content_type()
            in ("application/pkcs7-signature", "application/x-pkcs7-signature"),
            second.get_content_type(),
        )
        inner = [p.get_content_type() for p in first.walk()]
        s.check(f"{label}: text/plain introduction", "text/plain" in inner, ", ".join(inner))
        s.check(f"{label}: text/html introduction", "text/html" in inner, ", ".join(inner))
        s.check(f"{label}: one application/xml delil.xml", inner.count("application/xml") == 1)
        s.check(f"{label}: no message/rfc822 in evidence", "message/rfc822" not in inner)


@case(
    "KEP-MSGF-02",
    "the Evidence envelope's header fields follow the §3 table",
    section="§3",
    etsi="MSGF-EVIDENCE",
    rule="X-REM-Msg-Type Evidence; X-REM-Message-Identifier the REMMD id of the message; "
    "X-REM-Evidence-Type the root element name; X-REM-Event the EventCode suffix; "
    'X-REM-Evidence-Identifier; From: "KEP hsNN" <delil@hsNN.kep.tr>; To: the original sender; '
    "Subject: KEP delili: <type> <event>: <original subject>; Message-ID new; In-Reply-To, "
    "References the Dispatch envelope's Message-ID.",
)
async def evidence_headers(s: Session) -> None:
    outgoing, came = await delivered(s)
    for item in came:
        r = item.received
        label = item.label
        s.check(
            f"{label}: X-REM-Msg-Type Evidence",
            (r.msg_type or "").lower() == "evidence",
            str(r.msg_type),
        )
        s.check(
            f"{label}: X-REM-Message-Identifier is our REMMD id",
            r.message_identifier == outgoing.remmd,
            str(r.message_identifier),
        )
        if item.evidence is not None:
            s.check(
                f"{label}: X-REM-Evidence-Type = root element",
                r.header("X-REM-Evidence-Type") == item.evidence.type.value,
                str(r.header("X-REM-Evidence-Type")),
            )
            s.check(
                f"{label}: X-REM-Event = EventCode suffix",
                r.header("X-REM-Event") == item.evidence.event.value,
                str(r.header("X-REM-Event")),
            )
        sender = tools.mime(r.data)
        from_ = " ".join(str(sender.get("From", "")).split())
        s.check(
            f"{label}: From <delil@target domain>",
            f"<delil@{s.domain(s.target)}>" in from_.lower(),
            from_,
        )
        to = " ".join(str(sender.get("To", "")).split())
        s.check(f"{label}: To the original sender", outgoing.sender.lower() in to.lower(), to)
        subject = _decoded(str(sender.get("Subject", "")))
        s.check(
            f"{label}: Subject KEP delili: <type> <event>: <subject>",
            subject.startswith(f"KEP delili: {item.kind} {item.event}:")
            and subject.endswith(outgoing.subject),
            subject,
        )
        s.check(f"{label}: Message-ID present", bool(sender.get("Message-ID")))
        for field in ("In-Reply-To", "References"):
            value = " ".join(str(sender.get(field, "")).split())
            s.check(
                f"{label}: {field} the Dispatch's Message-ID",
                outgoing.message_id in value,
                value or "(none)",
            )
        s.check(
            f"{label}: X-TR-REM-iletiTip copied (standart)",
            (r.header("X-TR-REM-iletiTip") or "standart") == "standart",
            str(r.header("X-TR-REM-iletiTip")),
        )


def _decoded(raw: str) -> str:
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", raw)
    try:
        return str(email.header.make_header(email.header.decode_header(unfolded)))
    except (email.errors.HeaderParseError, LookupError, UnicodeDecodeError):
        return unfolded
