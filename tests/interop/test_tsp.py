"""RFC 3161 requests and replies (interop.cms.tsp): encoding, every status, every mismatch."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import cms, core, tsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interop.cms.sign import sign_digest
from interop.cms.timestamp import (
    DEV_TSA_POLICY,
    LocalTsa,
    token_carrying,
    token_for_imprint,
    verify_token,
)
from interop.cms.tsp import (
    Granted,
    Refused,
    TimeStampRequest,
    _TimeStampResp,
    read_reply,
    respond,
)
from interop.errors import CmsFormatError, ConfigurationError
from interop.pki.devpki import DevPki
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW, need_tool

DATA = b"the signature value being stamped"
NONCE = 0x8F3A_11C2_9D04_B7E5  # the high bit set: DER needs a leading zero octet
OTHER_POLICY = "1.3.6.1.4.1.99999.1.2"


def _granted(token: bytes, status: str = "granted") -> bytes:
    der: bytes = _TimeStampResp(
        {"status": {"status": status}, "time_stamp_token": cms.ContentInfo.load(token)}
    ).dump()
    return der


def _status_only(status: str, fail_info: set[str] | None = None, text: str | None = None) -> bytes:
    info: dict[str, object] = {"status": status}
    if fail_info is not None:
        info["fail_info"] = fail_info
    if text is not None:
        info["status_string"] = [text]
    der: bytes = _TimeStampResp({"status": info}).dump()
    return der


def _tst_token(pki: DevPki, change: Callable[[dict[str, object]], None]) -> bytes:
    """A token by the dev TSA over DATA with NONCE, its TSTInfo fields changed by ``change``."""
    fields: dict[str, object] = {
        "version": "v1",
        "policy": DEV_TSA_POLICY,
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": hashlib.sha256(DATA).digest(),
        },
        "serial_number": 7,
        "gen_time": NOW,
        "nonce": NONCE,
    }
    change(fields)
    tst_info = tsp.TSTInfo(fields).dump()
    return token_carrying(pki.tsa, tst_info, NOW)


def _request(policy: str | None = DEV_TSA_POLICY) -> TimeStampRequest:
    return TimeStampRequest.build(DATA, NONCE, policy=policy)


# -- the request ---------------------------------------------------------------------------


def test_request_encodes_what_rfc_3161_asks() -> None:
    request = _request()
    parsed = tsp.TimeStampReq.load(request.der, strict=True)
    assert parsed["version"].native == "v1"
    imprint = parsed["message_imprint"]
    assert imprint["hash_algorithm"]["algorithm"].native == "sha256"
    assert imprint["hashed_message"].native == hashlib.sha256(DATA).digest() == request.imprint
    assert parsed["nonce"].native == NONCE
    assert parsed["cert_req"].native is True
    assert parsed["req_policy"].dotted == DEV_TSA_POLICY
    assert isinstance(parsed["extensions"], core.Void)


def test_request_without_policy_and_with_sha512() -> None:
    request = TimeStampRequest.build(DATA, 1, digest="sha512")
    parsed = tsp.TimeStampReq.load(request.der, strict=True)
    assert isinstance(parsed["req_policy"], core.Void)
    assert parsed["message_imprint"]["hashed_message"].native == hashlib.sha512(DATA).digest()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"digest": "sha1"}, ConfigurationError),
        ({"digest": "md5"}, ConfigurationError),
        ({"policy": "not.an.oid"}, ConfigurationError),
        ({"policy": "1.02.3"}, ConfigurationError),
        ({"nonce": 0}, ValueError),
        ({"nonce": -5}, ValueError),
        ({"nonce": 1 << 200}, ValueError),
    ],
)
def test_request_refuses_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    nonce = kwargs.pop("nonce", NONCE)
    with pytest.raises(error):
        TimeStampRequest.build(DATA, nonce, **kwargs)  # type: ignore[arg-type]


@pytest.mark.tool
def test_openssl_reads_our_request(tmp_path: Path) -> None:
    path = tmp_path / "req.tsq"
    path.write_bytes(_request().der)
    done = subprocess.run(
        [need_tool("openssl"), "ts", "-query", "-in", str(path), "-text"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Hash Algorithm: sha256" in text
    assert f"Policy OID: {DEV_TSA_POLICY}" in text
    assert f"Nonce: 0x{NONCE:X}" in text
    assert "Certificate required: yes" in text
    digest = hashlib.sha256(DATA).hexdigest()
    octets = " ".join(digest[i : i + 2] for i in range(0, 32, 2))
    assert octets in text.replace("-", " ").lower()


# -- replies: every status -------------------------------------------------------------------


def test_granted_reply_gives_the_token_as_sent(pki: DevPki, verifiers: Verifiers) -> None:
    request = _request()
    reply = respond(LocalTsa(pki.tsa), request.der, NOW)
    answer = read_reply(request, reply)
    assert isinstance(answer, Granted)
    assert answer.gen_time == NOW and answer.policy == DEV_TSA_POLICY and not answer.with_mods
    assert answer.tsa == pki.tsa.certificate
    assert answer.token in reply  # byte for byte
    assert verifiers.tsa is not None
    checked = verify_token(answer.token, DATA, LATER, verifiers.tsa)
    assert checked.ok, checked.detail


def test_granted_with_mods(pki: DevPki) -> None:
    token = LocalTsa(pki.tsa).stamp_imprint(
        "sha256", hashlib.sha256(DATA).digest(), NOW, nonce=NONCE
    )
    answer = read_reply(_request(), _granted(token, "granted_with_mods"))
    assert isinstance(answer, Granted) and answer.with_mods


@pytest.mark.parametrize(
    ("status", "fail_info", "temporary"),
    [
        ("rejection", {"unaccepted_policy"}, False),
        ("rejection", {"bad_alg"}, False),
        ("rejection", {"bad_request", "bad_data_format"}, False),
        ("rejection", {"time_not_available"}, True),
        ("rejection", {"system_failure"}, True),
        ("rejection", None, True),  # no reason given: unknown trouble is temporary
        ("waiting", None, True),
        ("revocation_warning", None, False),
        ("revocation_notification", None, False),
    ],
)
def test_refusals_say_status_and_reason(
    status: str, fail_info: set[str] | None, temporary: bool
) -> None:
    reply = _status_only(status, fail_info, "Kural\x00 dışı\n  istek")
    answer = read_reply(_request(), reply)
    assert isinstance(answer, Refused)
    assert answer.status == status
    assert answer.fail_info == tuple(sorted(fail_info or ()))
    assert answer.text == "Kural dışı istek"  # printable, one line
    assert answer.temporary is temporary
    assert status in answer.detail and all(f in answer.detail for f in fail_info or ())


def test_refusal_text_is_shortened() -> None:
    answer = read_reply(_request(), _status_only("rejection", None, "x" * 5000))
    assert isinstance(answer, Refused) and len(answer.text) == 200


def test_refusal_carrying_a_token_is_still_a_refusal(pki: DevPki) -> None:
    # RFC 3161 §2.4.2: a token MUST NOT come with these statuses; it is not taken.
    token = LocalTsa(pki.tsa).stamp_imprint(
        "sha256", hashlib.sha256(DATA).digest(), NOW, nonce=NONCE
    )
    answer = read_reply(_request(), _granted(token, "revocation_warning"))
    assert isinstance(answer, Refused) and answer.status == "revocation_warning"


def test_granted_without_token_is_malformed() -> None:
    with pytest.raises(CmsFormatError, match="no token came"):
        read_reply(_request(), _status_only("granted"))


# -- replies that do not answer the request -----------------------------------------------


def test_wrong_nonce(pki: DevPki) -> None:
    token = LocalTsa(pki.tsa).stamp_imprint(
        "sha256", hashlib.sha256(DATA).digest(), NOW, nonce=NONCE + 1
    )
    with pytest.raises(CmsFormatError, match="nonce is not the one we sent"):
        read_reply(_request(), _granted(token))


def test_missing_nonce(pki: DevPki) -> None:
    token = LocalTsa(pki.tsa).stamp_imprint("sha256", hashlib.sha256(DATA).digest(), NOW)
    with pytest.raises(CmsFormatError, match="carries no nonce"):
        read_reply(_request(), _granted(token))


def test_wrong_imprint_or_algorithm(pki: DevPki) -> None:
    tsa = LocalTsa(pki.tsa)
    other = tsa.stamp_imprint("sha256", hashlib.sha256(b"other").digest(), NOW, nonce=NONCE)
    with pytest.raises(CmsFormatError, match="other data"):
        read_reply(_request(), _granted(other))
    sha384 = tsa.stamp_imprint("sha384", hashlib.sha384(DATA).digest(), NOW, nonce=NONCE)
    with pytest.raises(CmsFormatError, match="other data"):
        read_reply(_request(), _granted(sha384))


def test_wrong_policy(pki: DevPki) -> None:
    token = token_for_imprint(
        pki.tsa, "sha256", hashlib.sha256(DATA).digest(), NOW, 9, nonce=NONCE, policy=OTHER_POLICY
    )
    with pytest.raises(CmsFormatError, match=f"policy {OTHER_POLICY}, not {DEV_TSA_POLICY}"):
        read_reply(_request(), _granted(token))
    # Without a configured policy, the TSA's default is taken and reported.
    answer = read_reply(_request(policy=None), _granted(token))
    assert isinstance(answer, Granted) and answer.policy == OTHER_POLICY


def _without_certificates(token: bytes, keep: Callable[[cms.CertificateChoices], bool]) -> bytes:
    info = cms.ContentInfo.load(token)
    signed_data = info["content"]
    kept = [c for c in signed_data["certificates"] if keep(c)]
    signed_data["certificates"] = kept or None
    der: bytes = info.dump(force=True)
    return der


def test_missing_tsa_certificate(pki: DevPki) -> None:
    token = LocalTsa(pki.tsa).stamp_imprint(
        "sha256", hashlib.sha256(DATA).digest(), NOW, nonce=NONCE
    )
    tsa_serial = pki.tsa.certificate.serial_number
    only_ca = _without_certificates(token, lambda c: c.chosen.serial_number != tsa_serial)
    with pytest.raises(CmsFormatError, match="does not carry the TSA's certificate"):
        read_reply(_request(), _granted(only_ca))
    none = _without_certificates(token, lambda c: False)
    with pytest.raises(CmsFormatError, match="no certificates"):
        read_reply(_request(), _granted(none))


def test_broken_token_signature(pki: DevPki) -> None:
    token = LocalTsa(pki.tsa).stamp_imprint(
        "sha256", hashlib.sha256(DATA).digest(), NOW, nonce=NONCE
    )
    info = cms.ContentInfo.load(token)
    signer_info = info["content"]["signer_infos"][0]
    signature = bytearray(signer_info["signature"].native)
    signature[-1] ^= 0x01
    signer_info["signature"] = bytes(signature)
    with pytest.raises(CmsFormatError, match="token's signature"):
        read_reply(_request(), _granted(info.dump(force=True)))


def test_gen_time_without_zone(pki: DevPki) -> None:
    naive = core.GeneralizedTime.load(b"\x18\x0e20261124120000")

    def change(fields: dict[str, object]) -> None:
        fields["gen_time"] = naive

    with pytest.raises(CmsFormatError, match="genTime"):
        read_reply(_request(), _granted(_tst_token(pki, change)))


def test_token_that_is_not_a_tst_info(pki: DevPki) -> None:
    signature = sign_digest(pki.tsa, hashlib.sha256(DATA).digest(), NOW)
    with pytest.raises(CmsFormatError, match="no TSTInfo"):
        read_reply(_request(), _granted(signature))


def test_hand_built_token_passes_when_right(pki: DevPki) -> None:
    # The builder of the malformed cases above makes a good token when nothing is changed.
    answer = read_reply(_request(), _granted(_tst_token(pki, lambda fields: None)))
    assert isinstance(answer, Granted) and answer.serial == 7


# -- garbage: the library's error, never another -----------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"<html>503 Service Unavailable</html>",
        b"\x30\x03\x02\x01\x00",
        b"\x30\x80\x30\x80",
        b"\x30\x84\xff\xff\xff\xff",
        _status_only("rejection")[:-1],
    ],
)
def test_garbage_is_a_library_error(garbage: bytes) -> None:
    with pytest.raises(CmsFormatError, match=r"^time-stamp reply"):
        read_reply(_request(), garbage)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_a_reply_is_read_or_refused(pki: DevPki, data: st.DataObject) -> None:
    request = _request()
    reply = bytearray(_cached_reply(pki, request))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(reply) - 1))
        reply[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(reply)))
    try:
        answer = read_reply(request, bytes(reply[:cut]))
    except CmsFormatError:
        return
    assert isinstance(answer, Granted | Refused)


_REPLIES: dict[int, bytes] = {}


def _cached_reply(pki: DevPki, request: TimeStampRequest) -> bytes:
    key = id(pki)
    if key not in _REPLIES:
        _REPLIES[key] = respond(LocalTsa(pki.tsa), request.der, NOW)
    return _REPLIES[key]


@given(st.binary(max_size=400))
def test_random_bytes_are_read_or_refused(garbage: bytes) -> None:
    with contextlib.suppress(CmsFormatError):
        read_reply(_request(), garbage)


# -- the development TSA's side --------------------------------------------------------------


def _refusal_of(reply: bytes) -> Refused:
    answer = read_reply(_request(), reply)
    assert isinstance(answer, Refused)
    return answer


def test_respond_refuses_what_it_cannot_grant(pki: DevPki) -> None:
    tsa = LocalTsa(pki.tsa)
    assert _refusal_of(respond(tsa, b"junk", NOW)).fail_info == ("bad_data_format",)
    other = TimeStampRequest.build(DATA, NONCE, policy=OTHER_POLICY)
    assert _refusal_of(respond(tsa, other.der, NOW)).fail_info == ("unaccepted_policy",)
    sha1 = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha1"},
                "hashed_message": hashlib.sha1(DATA).digest(),  # noqa: S324
            },
        }
    ).dump()
    assert _refusal_of(respond(tsa, sha1, NOW)).fail_info == ("bad_alg",)
    short = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": b"\x01" * 20,
            },
        }
    ).dump()
    assert _refusal_of(respond(tsa, short, NOW)).fail_info == ("bad_data_format",)


def test_respond_without_policy_or_nonce_grants(pki: DevPki) -> None:
    request = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(DATA).digest(),
            },
        }
    ).dump()
    reply = _TimeStampResp.load(respond(LocalTsa(pki.tsa), request, NOW))
    assert reply["status"]["status"].native == "granted"
    assert reply["time_stamp_token"]["content_type"].native == "signed_data"


def test_make_token_echoes_nonce_and_policy(pki: DevPki) -> None:
    token = token_for_imprint(
        pki.tsa, "sha256", b"\x00" * 32, NOW + dt.timedelta(seconds=1), 1, nonce=5
    )
    signed = cms.ContentInfo.load(token)["content"]
    tst = tsp.TSTInfo.load(signed["encap_content_info"]["content"].parsed.dump())
    assert tst["nonce"].native == 5 and tst["policy"].dotted == DEV_TSA_POLICY
