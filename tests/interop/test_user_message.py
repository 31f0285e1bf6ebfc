from __future__ import annotations

import hashlib
import io

import pytest

from interop.envelope.smime import build_signed_message
from interop.envelope.user import verify_user_message
from interop.errors import EnvelopeFormatError
from interop.limits import KNOWN_OWN_LIMITS, MiB, message_limit
from interop.pki.devpki import DevPki
from interop.reasons import Reason
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW


def _message(pki: DevPki, user: str = "ali.yilmaz@hs01.kep.tr", subject: str = "Başvuru") -> bytes:
    return build_signed_message(
        pki.user(user).signer,
        sender=user,
        recipients=["ayse.demir@hs02.kep.tr"],
        subject=subject,
        body="Ekte başvurum vardır.",
        now=NOW,
        attachments=(("basvuru.pdf", "application/pdf", b"%PDF-1.7 test"),),
    )


def test_valid_user_message(pki: DevPki, verifiers: Verifiers) -> None:
    data = _message(pki)
    result = verify_user_message(io.BytesIO(data), verifiers.user, LATER)
    assert result.ok, result.signature.detail
    assert result.subject == "Başvuru"
    assert result.digest == hashlib.sha256(data).digest()
    assert result.size == len(data)
    assert result.signature.signer == pki.user("ali.yilmaz@hs01.kep.tr").signer.certificate


@pytest.mark.parametrize("user", ["suresi.dolmus@hs01.kep.tr", "iptal.edilmis@hs01.kep.tr"])
def test_expired_or_revoked_signer(pki: DevPki, verifiers: Verifiers, user: str) -> None:
    result = verify_user_message(io.BytesIO(_message(pki, user)), verifiers.user, LATER)
    assert result.reason is Reason.UserCertExpiredOrRevoked


def test_changed_message(pki: DevPki, verifiers: Verifiers) -> None:
    changed = _message(pki)
    # The attachment is base64 inside the signed part: change one base64 character.
    index = changed.index(b"JVBERi0xLjcgdGVzdA")
    data = changed[:index] + b"K" + changed[index + 1 :]
    result = verify_user_message(io.BytesIO(data), verifiers.user, LATER)
    assert result.reason is Reason.InvalidUserSignature


def test_unsigned_message_is_refused(verifiers: Verifiers) -> None:
    data = b"From: a@hs01.kep.tr\r\nSubject: x\r\n\r\nno signature\r\n"
    with pytest.raises(EnvelopeFormatError, match="not multipart/signed"):
        verify_user_message(io.BytesIO(data), verifiers.user, LATER)


def test_message_limits() -> None:
    assert message_limit("hs01", ["hs01"], KNOWN_OWN_LIMITS) == 100 * MiB
    assert message_limit("hs01", ["hs01", "hs02"], KNOWN_OWN_LIMITS) == 25 * MiB
    assert message_limit("hs02", ["hs02"], KNOWN_OWN_LIMITS) == 25 * MiB
    assert message_limit("hs02", ["hs02"], {"hs02": 50 * MiB}) == 50 * MiB
    assert message_limit("hs03", ["hs01"], KNOWN_OWN_LIMITS) == 25 * MiB
    # A peer configured for more or less: the smallest limit of the recipients' providers.
    peers = {"hs02": 30 * MiB, "hs03": 20 * MiB}
    assert message_limit("hs01", ["hs02"], KNOWN_OWN_LIMITS, peer_limits=peers) == 30 * MiB
    assert message_limit("hs01", ["hs02", "hs03"], {}, peer_limits=peers) == 20 * MiB
    assert message_limit("hs01", ["hs01", "hs02"], KNOWN_OWN_LIMITS, peer_limits=peers) == 30 * MiB
    assert message_limit("hs01", ["hs01"], KNOWN_OWN_LIMITS, peer_limits=peers) == 100 * MiB
