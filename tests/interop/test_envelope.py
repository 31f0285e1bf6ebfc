from __future__ import annotations

import base64
import datetime as dt
import io
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch, write_evidence_message
from interop.envelope.fields import IletiTip, MsgType
from interop.envelope.parse import parse_envelope
from interop.envelope.smime import base64_lines, build_signed_message
from interop.envelope.verify import verify_envelope
from interop.errors import CmsFormatError, EnvelopeFormatError, LimitExceeded, MalformedInput
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.xades import sign_evidence
from interop.limits import STREAM_CHUNK, Limits
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
from interop.reasons import Reason
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW, make_dispatch, make_evidence_message
from tests.interop.malformed import break_signer_issuer


def _verify(verifiers: Verifiers, data: bytes, peer: str | None = "hs01") -> Any:
    return verify_envelope(io.BytesIO(data), verifiers, LATER, peer=peer)


def test_dispatch_round_trip(pki: DevPki, verifiers: Verifiers) -> None:
    exchange = make_dispatch(
        pki, subject="Türkçe konu: ğüşıöç", extra_headers=(("X-TR-REM-iletiID", "42"),)
    )
    result = _verify(verifiers, exchange.dispatch)
    assert result.ok, result.detail
    envelope = result.envelope
    assert envelope.msg_type is MsgType.Dispatch
    assert envelope.ileti_tip is IletiTip.standart
    assert envelope.ileti_id == "42"
    assert envelope.message_identifier == exchange.submission.message.remmd_message_id
    original = exchange.dispatch[envelope.original.start : envelope.original.end]
    assert original == exchange.original  # byte for byte
    assert result.evidence.evidence.message.subject == "Türkçe konu: ğüşıöç"
    assert result.user_signature.ok
    assert result.envelope_signature.timestamp.ok
    assert [c.name for c in result.checks if not c.ok] == []


def test_evidence_message_round_trip(pki: DevPki, verifiers: Verifiers) -> None:
    exchange = make_dispatch(pki)
    evidence, data = make_evidence_message(pki, exchange.submission)
    result = _verify(verifiers, data, peer="hs02")
    assert result.ok, result.detail
    assert result.envelope.msg_type is MsgType.Evidence
    assert result.evidence.evidence.identifier == evidence.identifier
    headers = result.envelope.headers
    assert headers.get("To") == "ali.yilmaz@hs01.kep.tr"
    assert headers.get("From") == '"KEP hs02" <delil@hs02.kep.tr>'
    assert "KEP delili" in (headers.get("Subject") or "") or "=?utf-8?" in (
        headers.get("Subject") or ""
    )


def test_rsa_envelopes(rsa_pki: DevPki, rsa_verifiers: Verifiers) -> None:
    assert _verify(rsa_verifiers, make_dispatch(rsa_pki).dispatch).ok


def test_byte_changed_in_the_original(pki: DevPki, verifiers: Verifiers) -> None:
    exchange = make_dispatch(pki, body="Ödenecek tutar: 100 TL\n")
    envelope = parse_envelope(io.BytesIO(exchange.dispatch))
    position = envelope.original.start + len(exchange.original) // 2  # type: ignore[union-attr]
    data = bytearray(exchange.dispatch)
    data[position] ^= 0x01
    result = _verify(verifiers, bytes(data))
    assert not result.ok
    failed = {c.name for c in result.checks if not c.ok}
    assert {"envelope signature", "original digest"} <= failed
    assert result.reason is Reason.InvalidMessageFormat


def test_changed_evidence_header_fields(pki: DevPki, verifiers: Verifiers) -> None:
    data = make_dispatch(pki).dispatch.replace(
        b"X-REM-Event: Acceptance", b"X-REM-Event: Rejection"
    )
    result = _verify(verifiers, data)
    assert not result.ok and "X-REM-Event" in result.detail


def test_wrong_signer_cannot_speak_for_another_provider(pki: DevPki, verifiers: Verifiers) -> None:
    # hs02's key signs a Dispatch that claims to be hs01's.
    result = _verify(verifiers, make_dispatch(pki, envelope_signer="hs02").dispatch)
    assert result.reason is Reason.PolicyViolation
    failed = [c.name for c in result.checks if not c.ok]
    assert "envelope signature" in failed


def test_peer_mismatch(pki: DevPki, verifiers: Verifiers) -> None:
    result = _verify(verifiers, make_dispatch(pki).dispatch, peer="hs03")
    assert result.reason is Reason.PolicyViolation and "peer" in result.detail


def test_untrusted_provider(pki: DevPki, verifiers: Verifiers) -> None:
    stranger = generate(NOW, ["hs01", "hs02"])
    result = _verify(verifiers, make_dispatch(stranger).dispatch)
    assert result.reason is Reason.PolicyViolation
    assert "trusted CA" in result.detail


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("suresi.dolmus@hs01.kep.tr", Reason.UserCertExpiredOrRevoked),
        ("iptal.edilmis@hs01.kep.tr", Reason.UserCertExpiredOrRevoked),
    ],
)
def test_user_certificate_expired_or_revoked(
    pki: DevPki, verifiers: Verifiers, user: str, reason: Reason
) -> None:
    result = _verify(verifiers, make_dispatch(pki, sender=user).dispatch)
    assert result.reason is reason
    assert result.envelope_signature.ok and result.evidence.ok


def test_user_signature_by_an_untrusted_ca(pki: DevPki, verifiers: Verifiers) -> None:
    stranger = generate(NOW, ["hs01"])
    original = build_signed_message(
        stranger.user("ali.yilmaz@hs01.kep.tr").signer,
        sender="ali.yilmaz@hs01.kep.tr",
        recipients=["ayse.demir@hs02.kep.tr"],
        subject="x",
        body="y",
        now=NOW,
    )
    result = _verify(verifiers, make_dispatch(pki, original=original).dispatch)
    assert result.reason is Reason.InvalidUserSignature


def test_unsigned_original_is_an_invalid_user_signature(pki: DevPki, verifiers: Verifiers) -> None:
    original = (
        b"From: ali.yilmaz@hs01.kep.tr\r\nTo: ayse.demir@hs02.kep.tr\r\nSubject: x\r\n\r\nbody\r\n"
    )
    result = _verify(verifiers, make_dispatch(pki, original=original).dispatch)
    assert result.reason is Reason.InvalidUserSignature
    assert "not multipart/signed" in result.detail


def test_sender_from_another_provider(pki: DevPki, verifiers: Verifiers) -> None:
    result = _verify(verifiers, make_dispatch(pki, sender="ali.yilmaz@hs03.kep.tr").dispatch)
    assert result.reason is Reason.PolicyViolation and "not an address of hs01" in result.detail


def _mangle(data: bytes, pattern: bytes, replacement: bytes) -> bytes:
    assert pattern in data
    return data.replace(pattern, replacement, 1)


def _mangle_last(data: bytes, pattern: bytes, replacement: bytes) -> bytes:
    head, found, tail = data.rpartition(pattern)
    assert found
    return head + replacement + tail


@pytest.mark.parametrize(
    ("mangle", "error", "fragment"),
    [
        (lambda d: d[: len(d) // 2], EnvelopeFormatError, "closing boundary"),
        (lambda d: d[:200], EnvelopeFormatError, ""),
        (lambda d: d[:-20], EnvelopeFormatError, "closing boundary"),
        (
            lambda d: _mangle(d, b"multipart/signed", b"multipart/mixed"),
            EnvelopeFormatError,
            "not multipart/signed",
        ),
        (
            lambda d: _mangle(
                d,
                b'protocol="application/pkcs7-signature"',
                b'protocol="application/pgp-signature"',
            ),
            EnvelopeFormatError,
            "not S/MIME",
        ),
        (
            lambda d: _mangle(d, b"X-REM-Msg-Type: Dispatch\r\n", b""),
            EnvelopeFormatError,
            "lacks the header field X-REM-Msg-Type",
        ),
        (
            lambda d: _mangle(d, b"X-REM-Msg-Type: Dispatch", b"X-REM-Msg-Type: Other"),
            EnvelopeFormatError,
            "neither Dispatch",
        ),
        (
            lambda d: _mangle(d, b"X-REM-Message-Identifier:", b"X-Other:"),
            EnvelopeFormatError,
            "X-REM-Message-Identifier",
        ),
        (
            lambda d: _mangle(d, b"X-TR-REM-iletiTip: standart", b"X-TR-REM-iletiTip: acil"),
            EnvelopeFormatError,
            "iletiTip",
        ),
        (
            lambda d: _mangle(
                d,
                b'application/xml; name="delil.xml"',
                b'application/octet-stream; name="delil.xml"',
            ),
            EnvelopeFormatError,
            "unexpected part",
        ),
        (
            lambda d: _mangle(
                d,
                b'message/rfc822; name="ileti.eml"',
                b'application/octet-stream; name="ileti.eml"',
            ),
            EnvelopeFormatError,
            "unexpected part",
        ),
        (
            lambda d: _mangle_last(
                d, b"application/pkcs7-signature; name=", b"application/octet-stream; name="
            ),
            EnvelopeFormatError,
            "not smime.p7s",
        ),
        (
            lambda d: _mangle(d, b"\r\nSubject:", b"\nSubject:"),
            EnvelopeFormatError,
            "bare CR or LF",
        ),
        (lambda d: b"X-Long: " + b"a" * 20000 + b"\r\n" + d, LimitExceeded, "exceeds"),
        (
            lambda d: b"".join(b"X-H%d: v\r\n" % i for i in range(1200)) + d,
            LimitExceeded,
            "more than 1000",
        ),
        (lambda d: b"Broken header line\r\n" + d, EnvelopeFormatError, "malformed header line"),
        (lambda d: b"", EnvelopeFormatError, ""),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(
    pki: DevPki, verifiers: Verifiers, mangle: Any, error: type[Exception], fragment: str
) -> None:
    data = mangle(make_dispatch(pki).dispatch)
    with pytest.raises(error, match=re.escape(fragment) if fragment else None) as caught:
        _verify(verifiers, data)
    assert isinstance(caught.value, MalformedInput | LimitExceeded)
    assert caught.value.detail
    assert caught.value.smtp_reply.code in (550, 552, 553)


def test_broken_signature_part(pki: DevPki, verifiers: Verifiers) -> None:
    data = make_dispatch(pki).dispatch
    head, _sep, _tail = data.rpartition(b'filename="smime.p7s"\r\n\r\n')
    boundary = data.rstrip()[-60:].split(b"--")[-2]
    broken = head + b'filename="smime.p7s"\r\n\r\nMIIB\r\n\r\n--' + boundary + b"--\r\n"
    with pytest.raises((CmsFormatError, EnvelopeFormatError)):
        _verify(verifiers, broken)


def test_missing_original_in_a_dispatch(pki: DevPki, verifiers: Verifiers) -> None:
    exchange = make_dispatch(pki)
    _evidence, data = make_evidence_message(pki, exchange.submission)
    forged = data.replace(b"X-REM-Msg-Type: Evidence", b"X-REM-Msg-Type: Dispatch")
    with pytest.raises(EnvelopeFormatError, match=re.escape("no ileti.eml")):
        _verify(verifiers, forged)


class _ChunkCheckingStream(io.BytesIO):
    """Fails a test if anything reads more than one chunk at once (or reads to the end)."""

    largest = 0

    def read(self, size: int | None = -1, /) -> bytes:
        assert size is not None and 0 <= size <= STREAM_CHUNK + 1024, f"read({size})"
        type(self).largest = max(type(self).largest, size)
        return super().read(size)


def test_large_original_is_read_in_chunks(pki: DevPki, verifiers: Verifiers) -> None:
    attachment = bytes(range(256)) * (12 * 1024 * 1024 // 256 // 4 * 3)  # ~9 MiB, ~12 MiB base64
    exchange = make_dispatch(pki, attachments=(("ek.bin", "application/octet-stream", attachment),))
    stream = _ChunkCheckingStream(exchange.dispatch)
    result = verify_envelope(stream, verifiers, LATER, peer="hs01")
    assert result.ok, result.detail
    assert len(exchange.original) > 4 * STREAM_CHUNK
    assert _ChunkCheckingStream.largest <= STREAM_CHUNK + 1024


def test_part_count_is_bounded(pki: DevPki, verifiers: Verifiers) -> None:
    data = make_dispatch(pki).dispatch
    envelope = parse_envelope(io.BytesIO(data))
    assert envelope.original is not None
    with pytest.raises(LimitExceeded, match="more than 2 parts"):
        parse_envelope(io.BytesIO(data), Limits(mime_parts=2))


def _with_parts(dispatch: bytes, content_type: str, count: int) -> bytes:
    """``dispatch`` with ``count`` more parts of ``content_type`` in its multipart/mixed."""
    boundary = re.findall(rb'multipart/mixed; boundary="([^"]+)"', dispatch)[0]
    part = b"--" + boundary + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\nx\r\n"
    close = b"--" + boundary + b"--"
    return dispatch.replace(close, part * count + close, 1)


def test_content_type_work_in_a_dispatch_is_bounded(pki: DevPki) -> None:
    """60 parts, each with a 16 KiB Content-Type of RFC 2231 continuations, took 3 s to parse."""
    continuations = "text/plain; " + "; ".join(f"f*{i}=x" for i in range(1700))
    data = _with_parts(make_dispatch(pki).dispatch, continuations[: 16 * 1024 - 20], 60)
    with pytest.raises(LimitExceeded, match="Content-Type"):
        parse_envelope(io.BytesIO(data))
    commented = _with_parts(make_dispatch(pki).dispatch, "text/plain (tanıtım); charset=utf-8", 60)
    assert parse_envelope(io.BytesIO(commented)).original is not None


def _with_signature(message: bytes, change: Any) -> bytes:
    """``message`` with its last smime.p7s (the envelope's own, in a Dispatch) changed."""
    marker = b'filename="smime.p7s"\r\n\r\n'
    start = message.rindex(marker) + len(marker)
    end = message.index(b"\r\n--", start)
    der = base64.b64decode(message[start:end])
    return message[:start] + base64_lines(change(der)).rstrip(b"\r\n") + message[end:]


def test_malformed_envelope_signature_is_a_failed_check(pki: DevPki, verifiers: Verifiers) -> None:
    """check_signer raised from asn1crypto: the R-GW failed the message without evidence."""
    data = _with_signature(
        make_dispatch(pki).dispatch, lambda der: break_signer_issuer(der, "utf8")
    )
    result = _verify(verifiers, data)
    assert result.reason is Reason.InvalidMessageFormat
    assert result.detail.startswith("envelope signature:") and "malformed" in result.detail


def test_malformed_user_signature_is_a_failed_check(pki: DevPki, verifiers: Verifiers) -> None:
    user = pki.user("ali.yilmaz@hs01.kep.tr").signer
    original = build_signed_message(
        user,
        sender="ali.yilmaz@hs01.kep.tr",
        recipients=["ayse.demir@hs02.kep.tr"],
        subject="Deneme",
        body="Merhaba.",
        now=NOW,
    )
    broken = _with_signature(original, lambda der: break_signer_issuer(der, "length"))
    result = _verify(verifiers, make_dispatch(pki, original=broken).dispatch)
    assert result.reason is Reason.InvalidUserSignature
    assert result.detail.startswith("user signature:") and "malformed" in result.detail


def test_unsupported_envelope_digest_is_a_failed_check(pki: DevPki, verifiers: Verifiers) -> None:
    """hash_ranges raised CmsFormatError for a digest it cannot compute (here SHA-224)."""
    sha256 = b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01"
    data = _with_signature(
        make_dispatch(pki).dispatch, lambda der: der.replace(sha256, sha256[:-1] + b"\x04")
    )
    result = _verify(verifiers, data)
    assert result.reason is Reason.InvalidMessageFormat
    assert "sha224 is not supported" in result.detail


_subjects = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=60)
_bodies = st.text(st.characters(blacklist_categories=["Cs"]), max_size=400)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subject=_subjects,
    body=_bodies,
    recipients=st.lists(
        st.sampled_from(
            ["ayse.demir@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr", "0123456789012345@hs02.kep.tr"]
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    attachment=st.binary(max_size=3000),
)
def test_dispatch_build_parse_round_trip(
    pki: DevPki,
    verifiers: Verifiers,
    subject: str,
    body: str,
    recipients: list[str],
    attachment: bytes,
) -> None:
    exchange = make_dispatch(
        pki,
        subject=subject,
        body=body,
        recipients=tuple(recipients),
        attachments=(("ek.bin", "application/octet-stream", attachment),) if attachment else (),
    )
    result = _verify(verifiers, exchange.dispatch)
    assert result.ok, result.detail
    span = result.envelope.original
    assert exchange.dispatch[span.start : span.end] == exchange.original
    evidence = result.evidence.evidence
    assert evidence.recipients == tuple(recipients)
    assert evidence.message.subject == subject.strip() or evidence.message.subject == subject
    assert (
        evidence.type is EvidenceType.SubmissionAcceptanceRejection
        and evidence.event is Event.Acceptance
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000), cut=st.integers(0, 40000))
def test_garbage_and_truncation_never_crash(
    pki: DevPki, verifiers: Verifiers, data: bytes, cut: int
) -> None:
    for candidate in (data, make_dispatch(pki).dispatch[:cut] + data):
        try:
            result = _verify(verifiers, candidate)
        except (MalformedInput, LimitExceeded) as exc:
            assert exc.detail
        else:
            assert result.ok or result.reason is not None


def _stamped_dispatch(pki: DevPki) -> bytes:
    """A Dispatch whose three signatures (e-imza, evidence, envelope) are all time-stamped."""
    tsa = LocalTsa(pki.tsa)

    def stamp(data: bytes) -> bytes:
        return tsa.stamp(data, NOW)

    original = build_signed_message(
        pki.user("ali.yilmaz@hs01.kep.tr").signer,
        sender="ali.yilmaz@hs01.kep.tr",
        recipients=["ayse.demir@hs02.kep.tr"],
        subject="Zaman damgalı",
        body="Merhaba.\n",
        now=NOW,
        timestamp=stamp,
    )
    submission = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY["hs01"],
        "ali.yilmaz@hs01.kep.tr",
        ["ayse.demir@hs02.kep.tr"],
        "rem-stamped@hs01.kep.tr",
        NOW,
    )
    signer = pki.providers["hs01"].process
    out = io.BytesIO()
    write_dispatch(
        out,
        io.BytesIO(original),
        submission,
        sign_evidence(submission, signer, NOW, timestamp=stamp),
        signer,
        NOW,
        message_id=f"<d-{submission.identifier}@hs01.kep.tr>",
        timestamp=stamp,
    )
    return out.getvalue()


def test_time_stamped_dispatch_verifies_after_every_signer_expired(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """Profile 1.1 §1 "Signing time": each signer is judged at its time-stamp's genTime."""
    data = _stamped_dispatch(pki)
    assert _verify(verifiers, data).ok
    leaves = [
        pki.providers["hs01"].process.certificate,
        pki.user("ali.yilmaz@hs01.kep.tr").signer.certificate,
        pki.tsa.certificate,
    ]
    after = max(c.not_valid_after_utc for c in leaves) + dt.timedelta(days=1)
    result = verify_envelope(io.BytesIO(data), verifiers, after, peer="hs01", tsa_valid_at=LATER)
    assert result.ok, result.detail
    for signature in (result.envelope_signature, result.evidence, result.user_signature):
        assert signature is not None and signature.timestamp is not None
        assert signature.proven_time == NOW and signature.timestamp.ok
    judged_now = verify_envelope(io.BytesIO(data), verifiers, after, peer="hs01")
    assert not judged_now.ok
    failed = {c.name for c in judged_now.checks if not c.ok}
    assert failed == {"envelope signature", "evidence signature", "user signature"}


def test_envelope_signature_without_time_stamp_is_judged_now(
    pki: DevPki, verifiers: Verifiers
) -> None:
    exchange = make_dispatch(pki, stamp=False)
    after = pki.providers["hs01"].process.certificate.not_valid_after_utc + dt.timedelta(days=1)
    result = verify_envelope(
        io.BytesIO(exchange.dispatch), verifiers, after, peer="hs01", tsa_valid_at=LATER
    )
    envelope_signature = result.envelope_signature
    assert envelope_signature is not None
    assert envelope_signature.reason is Reason.PolicyViolation
    assert "expired on" in envelope_signature.detail
    assert envelope_signature.proven_time is None


def test_evidence_message_with_xades_t_after_expiry(pki: DevPki, verifiers: Verifiers) -> None:
    exchange = make_dispatch(pki)
    evidence = follow_up(
        exchange.submission,
        BUILTIN_DIRECTORY["hs02"],
        EvidenceType.DeliveryNonDeliveryToRecipient,
        Event.Delivery,
        NOW,
        recipient=1,
    )
    tsa = LocalTsa(pki.tsa)
    signer = pki.providers["hs02"].process
    out = io.BytesIO()
    write_evidence_message(
        out,
        evidence,
        sign_evidence(evidence, signer, NOW, timestamp=lambda d: tsa.stamp(d, NOW)),
        signer,
        NOW,
        message_id=f"<e-{evidence.identifier}@hs02.kep.tr>",
        issuer_id="hs02",
        timestamp=lambda d: tsa.stamp(d, NOW),
    )
    after = signer.certificate.not_valid_after_utc + dt.timedelta(days=1)
    result = verify_envelope(
        io.BytesIO(out.getvalue()), verifiers, after, peer="hs02", tsa_valid_at=LATER
    )
    assert result.ok, result.detail
    assert result.evidence is not None and result.evidence.proven_time == NOW
    assert any("time-stamped at" in c.detail for c in result.checks if c.name.startswith("evid"))


# -- a parse handed in (the relay's intake read the envelope before it said 250) -------------


def _outcome(result: Any) -> tuple[Any, ...]:
    envelope = result.envelope
    return (
        result.ok,
        result.reason,
        result.detail,
        result.checks,
        result.issuer_id,
        result.original_digest,
        envelope.headers,
        envelope.signed,
        envelope.original,
        envelope.evidence_xml,
        envelope.signature.signed_attrs_der,
        envelope.signature.certificates,
    )


def _case(pki: DevPki, case: str) -> tuple[bytes, str]:
    """An envelope and the peer it comes from: valid ones, and each kind of failure."""
    if case == "evidence message":
        return make_evidence_message(pki, make_dispatch(pki).submission)[1], "hs02"
    if case == "wrong signer":
        return make_dispatch(pki, envelope_signer="hs02").dispatch, "hs01"
    if case == "unsigned original":
        unsigned = b"From: ali.yilmaz@hs01.kep.tr\r\nSubject: x\r\n\r\nMerhaba.\r\n"
        return make_dispatch(pki, original=unsigned).dispatch, "hs01"
    exchange = make_dispatch(pki, body="Ödenecek tutar: 100 TL\n")
    data = exchange.dispatch
    if case == "original changed":
        position = data.index(exchange.original) + len(exchange.original) // 2
        data = data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]
    elif case == "header fields changed":
        data = _mangle(data, b"X-REM-Event: Acceptance", b"X-REM-Event: Rejection")
    return data, "hs03" if case == "peer mismatch" else "hs01"


@pytest.mark.parametrize(
    "case",
    [
        "dispatch",
        "evidence message",
        "original changed",
        "header fields changed",
        "peer mismatch",
        "wrong signer",
        "unsigned original",
    ],
)
def test_a_parse_handed_in_verifies_as_a_parse_anew(
    pki: DevPki, verifiers: Verifiers, case: str
) -> None:
    data, peer = _case(pki, case)
    parsed = parse_envelope(io.BytesIO(data))
    anew = verify_envelope(io.BytesIO(data), verifiers, LATER, peer=peer)
    given = verify_envelope(io.BytesIO(data), verifiers, LATER, peer=peer, envelope=parsed)
    assert _outcome(given) == _outcome(anew)
    assert given.envelope is parsed
    assert anew.ok is (case in ("dispatch", "evidence message"))


@pytest.mark.parametrize("where", ["original", "delil.xml"])
def test_signed_bytes_changed_after_the_parse_still_fail(
    pki: DevPki, verifiers: Verifiers, where: str
) -> None:
    # The structure comes from the parse, but what the signatures cover is hashed from the
    # stream: bytes changed since the parse fail as they would have before it.
    exchange = make_dispatch(pki, body="Ödenecek tutar: 100 TL\n")
    data = exchange.dispatch
    parsed = parse_envelope(io.BytesIO(data))
    assert parsed.original is not None
    if where == "original":
        position = parsed.original.start + parsed.original.size // 2
    else:
        part = data.index(b'filename="delil.xml"')
        position = data.index(b"\r\n\r\n", part) + 14  # a letter of its base64, made another
    changed = data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]
    result = verify_envelope(io.BytesIO(changed), verifiers, LATER, peer="hs01", envelope=parsed)
    assert not result.ok
    failed = {c.name for c in result.checks if not c.ok}
    assert "envelope signature" in failed
    if where == "original":
        assert "original digest" in failed


@given(st.binary(max_size=400))
def test_base64_lines_are_what_the_standard_library_writes_with_crlf(data: bytes) -> None:
    """RFC 2045 §6.8: lines of 76 characters, each ended by CRLF; the standard library's
    ``encodebytes`` writes the same lines ended by LF."""
    assert base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")
