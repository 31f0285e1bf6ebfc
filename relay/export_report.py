"""The one-page report inside an export (report.html), for a reader who is not an engineer.

Takes the export's manifest, the evidence as signed and how it verified at export time;
returns the bytes of one self-contained page, in Turkish and English: the message, the
original's SHA-256, the timeline (one row per evidence, in ledger order: the event, its time,
its issuer, the time-stamp and its TSA, the verification result), the archive time-stamps and
how to verify the file. No scripts, no external resources (a Content-Security-Policy forbids
them too), and every value HTML-escaped: subjects, addresses and reasons come from users and
peers. It is well-formed XHTML as well as HTML, so an XML parser can check it.
The report is a reading aid: what proves anything is the signed files beside it.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256

from interop.evidence.model import Evidence
from interop.evidence.teblig import ISTANBUL
from relay.export_format import Manifest
from relay.export_verify import EvidenceOutcome, ExportVerification

# (type, event) → (Turkish, English): the steps of KEP-DOMAIN.md "Evidence steps".
EVENTS = {
    ("SubmissionAcceptanceRejection", "Acceptance"): (
        "Gönderildi: gönderenin hizmet sağlayıcısı kabul etti",
        "Submitted: accepted by the sender's provider",
    ),
    ("SubmissionAcceptanceRejection", "Rejection"): (
        "Gönderenin hizmet sağlayıcısı reddetti",
        "Rejected by the sender's provider",
    ),
    ("RelayREMMDAcceptanceRejection", "Acceptance"): (
        "Alıcının hizmet sağlayıcısı kabul etti",
        "Accepted by the recipient's provider",
    ),
    ("RelayREMMDAcceptanceRejection", "Rejection"): (
        "Alıcının hizmet sağlayıcısı reddetti",
        "Rejected by the recipient's provider",
    ),
    ("RelayREMMDFailure", "DeliveryExpiration"): (
        "Alıcının hizmet sağlayıcısına iletilemedi",
        "Could not be relayed to the recipient's provider",
    ),
    ("DeliveryNonDeliveryToRecipient", "Delivery"): (
        "Alıcının posta kutusuna teslim edildi",
        "Delivered to the recipient's mailbox",
    ),
    ("DeliveryNonDeliveryToRecipient", "NonDelivery"): (
        "Alıcının posta kutusuna teslim edilemedi",
        "Could not be delivered to the recipient's mailbox",
    ),
    ("RetrievalNonRetrievalByRecipient", "Retrieval"): (
        "Alıcı tarafından okundu",
        "Read by the recipient",
    ),
    ("RetrievalNonRetrievalByRecipient", "NonRetrieval"): (
        "Alıcı tarafından okunmadı",
        "Not read by the recipient",
    ),
}

# Nothing but the inline style may load or run, should anything slip past the escaping.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
_STYLE = """
body { font: 10pt/1.35 sans-serif; margin: 1.5em; color: #111; }
h1 { font-size: 14pt; margin: 0 0 .4em; } h2 { font-size: 11pt; margin: 1em 0 .3em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #999; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eee; } code { font-size: 8.5pt; word-break: break-all; }
.en { color: #555; }
.ok { color: #064; font-weight: bold; } .bad { color: #a00; font-weight: bold; }
@page { size: A4 landscape; margin: 12mm; }
"""


def e(value: object) -> str:
    """Text for HTML: every value goes through here."""
    return html.escape(str(value), quote=True)


def _both(turkish: str, english: str) -> str:
    return f'{e(turkish)}<br /><span class="en" lang="en">{e(english)}</span>'


def _time(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    local = value.astimezone(ISTANBUL).strftime("%Y-%m-%d %H:%M:%S")
    utc = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f'{e(local)} TSİ<br /><span class="en">{e(utc)} UTC</span>'


def _verdict(ok: bool, detail: str = "") -> str:
    if ok:
        return '<span class="ok">✓ Geçerli / Valid</span>'
    return f'<span class="bad">✗ GEÇERSİZ / INVALID</span><br />{e(detail)}'


def _facts(manifest: Manifest, first: Evidence | None, verification: ExportVerification) -> str:
    rows = [
        (("İleti kimliği", "REMMD message id"), f"<code>{e(manifest.remmd_id)}</code>"),
        (("Konu", "Subject"), e(first.message.subject) if first else "—"),
        (("Gönderen", "Sender"), e(first.sender) if first else "—"),
        (("Alıcılar", "Recipients"), e(", ".join(first.recipients)) if first else "—"),
        (
            ("Asıl iletinin SHA-256 özeti", "SHA-256 of the original message"),
            f"<code>{e(manifest.original_sha256)}</code>",
        ),
        (
            ("Dışa aktaran", "Exported by"),
            f"{e(manifest.provider_id)} ({e(manifest.provider_domain)}), "
            + _time(manifest.exported_at),
        ),
        (
            ("Dışa aktarımda doğrulama", "Verified at export"),
            _verdict(verification.ok, verification.detail),
        ),
    ]
    body = "".join(f"<tr><th>{_both(*label)}</th><td>{value}</td></tr>" for label, value in rows)
    return f"<table>{body}</table>"


def _event(entry_type: str, event: str, evidence: Evidence | None) -> str:
    turkish, english = EVENTS.get((entry_type, event), (f"{entry_type} {event}",) * 2)
    text = _both(turkish, english)
    if evidence is not None:
        for reason in evidence.reasons:
            text += f"<br />{e(reason.reason.name)}" + (
                f": {e(reason.details)}" if reason.details else ""
            )
        if evidence.delil_turu is not None:
            text += f'<br /><span class="en">DelilTuru {e(evidence.delil_turu)}</span>'
    return text


def _stamp_cell(outcome: EvidenceOutcome) -> str:
    stamp = outcome.result.timestamp if outcome.result else None
    if stamp is None or stamp.time is None:
        return "—"
    text = f"{_time(stamp.time)}<br />{e(stamp.tsa)}"
    archived = outcome.archived
    if archived is not None and archived.result.time is not None:
        text += (
            f'<br /><span class="en">arşiv damgası / archive stamp {e(archived.seq)}:'
            f" {e(archived.result.time.isoformat())}</span>"
        )
    return text


def _timeline(
    manifest: Manifest, evidence: Sequence[Evidence | None], outcomes: Sequence[EvidenceOutcome]
) -> str:
    head = "".join(
        f"<th>{_both(tr, en)}</th>"
        for tr, en in (
            ("Sıra", "No."),
            ("Olay", "Event"),
            ("Zaman", "Time"),
            ("Düzenleyen", "Issuer"),
            ("Alıcı", "Recipient"),
            ("Zaman damgası", "Time-stamp"),
            ("Doğrulama", "Verification"),
        )
    )
    rows = []
    by_file = {o.entry.file: o for o in outcomes}
    for index, (entry, signed) in enumerate(zip(manifest.evidence, evidence, strict=True), 1):
        outcome = by_file.get(entry.file)
        rows.append(
            "<tr>"
            f"<td>{index}</td>"
            f"<td>{_event(entry.type, entry.event, signed)}</td>"
            f"<td>{_time(signed.event_time) if signed else e(entry.event_time)}</td>"
            f"<td>{e(entry.issuer)}</td>"
            f"<td>{e(entry.recipient or '—')}</td>"
            f"<td>{_stamp_cell(outcome) if outcome else '—'}</td>"
            f"<td>{_verdict(outcome.ok, outcome.problem or '') if outcome else '—'}"
            f"<br /><code>{e(entry.file)}</code><br /><code>{e(entry.sha256)}</code></td>"
            "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _archive(verification: ExportVerification) -> str:
    checked = verification.archive.checked if verification.archive else ()
    if not checked:
        return (
            "<p>"
            + _both(
                "Henüz arşiv zaman damgası yok: her delil kendi zaman damgasıyla doğrulanır.",
                "No archive time-stamp yet: each evidence is verified by its own time-stamp.",
            )
            + "</p>"
        )
    rows = "".join(
        "<tr>"
        f"<td>{e(c.seq)}</td><td>{e(c.records)}</td><td>{_time(c.result.time)}</td>"
        f"<td>{e(c.result.tsa)}</td><td>{_time(c.judged_at)}</td>"
        f"<td>{_verdict(c.result.ok, c.result.detail)}</td>"
        "</tr>"
        for c in checked
    )
    head = "".join(
        f"<th>{_both(tr, en)}</th>"
        for tr, en in (
            ("Sıra", "No."),
            ("Kapsanan kayıt", "Ledger records covered"),
            ("Zaman", "Time"),
            ("Zaman damgası sağlayıcısı", "Time-stamping authority"),
            ("Değerlendirme zamanı", "Judged as of"),
            ("Doğrulama", "Verification"),
        )
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _roots(certificates: Sequence[x509.Certificate]) -> str:
    roots = [c for c in certificates if c.subject == c.issuer]
    items = "".join(
        f"<li>{e(c.subject.rfc4514_string())}<br /><code>SHA-256"
        f" {e(c.fingerprint(SHA256()).hex())}</code></li>"
        for c in roots
    )
    return f"<ul>{items}</ul>" if items else ""


def render_report(
    manifest: Manifest,
    evidence: Sequence[Evidence | None],
    verification: ExportVerification,
    certificates: Sequence[x509.Certificate] = (),
    file_name: str = "FILE.zip",
) -> bytes:
    """report.html for ``manifest``; ``evidence`` parallel to ``manifest.evidence``."""
    first = next((x for x in evidence if x is not None), None)
    page = f"""<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="tr" xml:lang="tr">
<head>
<meta charset="utf-8" />
<meta http-equiv="Content-Security-Policy" content="{_POLICY}" />
<title>KEP delil raporu / KEP evidence report: {e(manifest.remmd_id)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>KEP delil raporu <span class="en" lang="en">/ KEP evidence report</span></h1>
{_facts(manifest, first, verification)}
<h2>Zaman çizelgesi <span class="en" lang="en">/ Timeline</span></h2>
{_timeline(manifest, evidence, verification.evidence)}
<h2>Arşiv zaman damgaları <span class="en" lang="en">/ Archive time-stamps</span></h2>
{_archive(verification)}
<h2>Nasıl doğrulanır <span class="en" lang="en">/ How to verify</span></h2>
<p>{
        _both(
            "Bu rapor okumayı kolaylaştırır; kanıt, yanındaki imzalı dosyalardır. Dosyayı ağ"
            " bağlantısı olmadan, aşağıdaki kök sertifikalarla doğrulayın:",
            "This report is a reading aid; the evidence is the signed files beside it. Verify the"
            " file offline, with the root certificates below:",
        )
    }</p>
<p><code>kep-relay evidence verify {e(file_name)} --trust ROOTS.pem</code></p>
{_roots(certificates)}
</body>
</html>
"""
    return page.encode("utf-8")
