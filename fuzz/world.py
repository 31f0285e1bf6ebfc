"""The fixed world the fuzz targets run in: one development PKI, its verifiers, and the seeds.

Seeds are made at run time by the project's own builders (``tests.helpers``, ``interop.pki``,
``interop.envelope.build``), not committed: a signed seed is only worth mutating if it
verifies, and it verifies only against the PKI that signed it, whose private keys are never
committed (``certs/README.md``). So a campaign makes its PKI once in its work folder
(``<work>/pki``), keeps it, and makes the seeds from it; a saved crash then reproduces
against the same keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms.sign import sign_digest
from interop.cms.timestamp import LocalTsa
from interop.envelope.smime import build_signed_message, encode_header
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.evidence.model import EventReason, Evidence
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
from interop.reasons import Reason
from interop.verifiers import Verifiers
from relay.keys import ensure_dev_pki, read_pki, verifiers_from_pki
from tests.helpers import LATER, NOW, make_dispatch, make_evidence_message

# The detached content every CMS seed signs: the cms target checks signatures over it.
CMS_CONTENT = b"Content-Type: text/plain\r\n\r\nKEP fuzz\r\n"
_PROVIDERS = ("hs01", "hs02")
_CONTENT_TYPE_FIELD = re.compile(rb"Content-Type: ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")


@dataclass(frozen=True)
class World:
    pki: DevPki
    verifiers: Verifiers
    now: dt.datetime  # when the targets verify: a little after the PKI and the seeds were made


def load_world(folder: Path) -> World:
    """The PKI kept in ``folder`` (made there, under a lock, the first time)."""
    ensure_dev_pki(folder, lambda: generate(NOW, _PROVIDERS, "ec"))
    pki = read_pki(folder)
    return World(pki, verifiers_from_pki(pki), LATER)


@dataclass(frozen=True)
class Samples:
    """Well-formed inputs of every kind, made by the project's builders."""

    dispatch: bytes
    evidence_message: bytes
    original: bytes  # the user's S/MIME message inside the Dispatch
    evidence_xml: tuple[bytes, ...]  # signed delil.xml of several kinds (reasons, extensions)
    unsigned_xml: tuple[bytes, ...]
    signatures: tuple[bytes, ...]  # DER CMS: provider (time-stamped), user, time-stamp token
    certificates: tuple[bytes, ...]
    addresses: tuple[str, ...]
    subjects: tuple[str, ...]

    @property
    def content_types(self) -> Iterator[str]:
        for message in (self.dispatch, self.evidence_message):
            for match in _CONTENT_TYPE_FIELD.finditer(message):
                # Unfolded, as read_headers hands it on (RFC 5322 §2.2.3).
                yield match.group(1).replace(b"\r\n", b"").decode("utf-8", "surrogateescape")
        yield "application/pdf; name*=utf-8''%C3%A7al%C4%B1%C5%9Fma.pdf"
        yield 'text/plain; name*0="uzun "; name*1="dosya adı.txt"; charset=utf-8'
        yield 'multipart/mixed (KEP) ; boundary="b" (sınır)'


def make_samples(world: World) -> Samples:
    pki = world.pki
    exchange = make_dispatch(
        pki,
        subject="Başvuru: çğıöşü İ",
        attachments=(("ek.pdf", "application/pdf", b"%PDF-1.7 fuzz"),),
    )
    _evidence, evidence_message = make_evidence_message(pki, exchange.submission)
    kinds = _evidence_kinds(exchange.submission)
    process = pki.providers["hs01"].process
    user = pki.user("ali.yilmaz@hs01.kep.tr").signer
    tsa = LocalTsa(pki.tsa)
    digest = hashlib.sha256(CMS_CONTENT).digest()
    signatures = (
        sign_digest(process, digest, NOW, timestamp=lambda s: tsa.stamp(s, NOW)),
        sign_digest(user, digest, NOW),
        tsa.stamp(CMS_CONTENT, NOW),
    )
    certificates = (
        process.certificate,
        user.certificate,
        pki.tsa.certificate,
        pki.providers["hs02"].tls.certificate,
        pki.process_ca.certificate,
    )
    return Samples(
        dispatch=exchange.dispatch,
        evidence_message=evidence_message,
        original=exchange.original,
        evidence_xml=tuple(
            sign_evidence(e, pki.providers[_issuer_id(e)].process, NOW) for e in kinds
        ),
        unsigned_xml=tuple(xmlio.to_bytes(e) for e in kinds),
        signatures=signatures,
        certificates=tuple(c.public_bytes(Encoding.DER) for c in certificates),
        addresses=(
            *(u.address for u in pki.users),
            "delil@hs01.kep.tr",
            "0123456789012345.serbest@tkgm.hs02.kep.tr",
            "Ali.Yilmaz@HS01.KEP.TR",
        ),
        subjects=(
            encode_header("Başvuru: çğıöşü İ"),
            "=?utf-8?q?Ba=C5=9Fvuru?= =?iso-8859-9?b?5/Dw?=",
            "Deneme iletisi",
        ),
    )


def _evidence_kinds(submission: Evidence) -> list[Evidence]:
    hs02 = BUILTIN_DIRECTORY["hs02"]
    return [
        submission,
        follow_up(
            submission,
            hs02,
            EvidenceType.RelayREMMDAcceptanceRejection,
            Event.Rejection,
            LATER,
            recipient=1,
            reasons=(EventReason(Reason.UnknownRecipient, "no such account"),),
        ),
        follow_up(
            submission,
            BUILTIN_DIRECTORY["hs01"],
            EvidenceType.DeliveryNonDeliveryToRecipient,
            Event.Delivery,
            LATER,
            recipient=1,
            teblig_zamani=LATER,
        ),
    ]


def _issuer_id(evidence: Evidence) -> str:
    return evidence.issuer.rsplit("@", 1)[1].split(".", 1)[0]  # delil@hs02.kep.tr: hs02


def one_more_user_message(world: World) -> bytes:
    """A second shape of user message: several attachments, extra header fields."""
    signer = world.pki.user("ayse.demir@hs02.kep.tr").signer
    return build_signed_message(
        signer,
        sender="ayse.demir@hs02.kep.tr",
        recipients=["ali.yilmaz@hs01.kep.tr", "0123456789012345@hs01.kep.tr"],
        subject="Fatura",
        body="Ekler.\n",
        now=NOW,
        attachments=(("a.txt", "text/plain", b"a"), ("b.xml", "application/xml", b"<b/>")),
        extra_headers=(("X-TR-REM-iletiTip", "eYazisma"),),
    )
