"""The TSA client against a TSA nobody here wrote, and OpenSSL against our tokens.

The TSA is ``openssl ts -reply`` behind a small HTTP front (``http.server`` on a thread of the
test, on 127.0.0.1): each POSTed request is answered by running OpenSSL with the development
PKI's TSA certificate and key. OpenSSL stamps with the wall clock, which no option freezes, so
these tests use a dev PKI made now rather than the frozen one of the other tests.

The other direction: ``openssl ts -verify`` accepts every token the project makes (the dev
TSA's, over data, over a CAdES-T signature value, and as a reply to our request).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization

from interop.cms.sign import sign_digest
from interop.cms.timestamp import DEV_TSA_POLICY, LocalTsa, verify_token
from interop.cms.tsp import TimeStampRequest, respond
from interop.pki.devpki import DevPki, generate
from interop.verifiers import Verifiers
from relay.keys import verifiers_from_pki
from relay.tsa import HttpStamper, TsaClientConfig, TsaUnavailable
from tests.helpers import LATER, NOW
from tests.tools.tsa_front import OPENSSL_POLICY, Front, openssl, serving, tsa_folder

DATA = b"the signature value being stamped"

pytestmark = pytest.mark.tool


@pytest.fixture(scope="module")
def live_pki() -> DevPki:
    return generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), ["hs01"])


@pytest.fixture(scope="module")
def live_verifiers(live_pki: DevPki) -> Verifiers:
    return verifiers_from_pki(live_pki)


@pytest.fixture(scope="module")
def openssl_tsa(live_pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tsa_folder(live_pki, tmp_path_factory.mktemp("openssl-tsa"))


@pytest.fixture
def front(openssl_tsa: Path) -> Iterator[tuple[Front, str]]:
    state = Front(openssl_tsa)
    with serving(state) as url:
        yield state, url


def _config(url: str, **changes: object) -> TsaClientConfig:
    fields: dict[str, object] = {"url": url, "policy": OPENSSL_POLICY, "timeout": 10.0}
    fields["backoff"] = 0.05
    fields.update(changes)
    return TsaClientConfig(**fields)  # type: ignore[arg-type]


def _stamp_all(config: TsaClientConfig, verifiers: Verifiers, *data: bytes) -> list[bytes]:
    async def go() -> list[bytes]:
        async with HttpStamper(config, validator=verifiers.tsa) as stamper:
            return list(await asyncio.gather(*(stamper.stamp(d) for d in data)))

    return asyncio.run(go())


def _unavailable(config: TsaClientConfig, verifiers: Verifiers) -> TsaUnavailable:
    with pytest.raises(TsaUnavailable) as caught:
        _stamp_all(config, verifiers, DATA)
    return caught.value


def test_tokens_from_openssl_tsa_are_checked_and_verified(
    front: tuple[Front, str], live_verifiers: Verifiers
) -> None:
    state, url = front
    (token,) = _stamp_all(_config(url), live_verifiers, DATA)
    assert state.requests == 1 and not state.errors
    assert live_verifiers.tsa is not None
    checked = verify_token(
        token,
        DATA,
        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5),
        live_verifiers.tsa,
    )
    assert checked.ok, checked.detail


def test_several_requests_in_flight(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    state.delay = 0.3
    data = [f"signature {i}".encode() for i in range(8)]
    tokens = _stamp_all(_config(url, max_in_flight=4), live_verifiers, *data)
    assert len(set(tokens)) == 8 and state.requests == 8 and not state.errors
    assert 2 <= state.most_in_flight <= 4


def test_500_then_success(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    state.failures = 2
    assert _stamp_all(_config(url, retries=2), live_verifiers, DATA)
    assert state.requests == 3


def test_always_500_gives_up(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    state.failures = 10
    failure = _unavailable(_config(url, retries=2), live_verifiers)
    assert failure.why == "http_status" and failure.passes_on_retry and state.requests == 3


def test_refused_policy_fromopenssl(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    failure = _unavailable(_config(url, policy=DEV_TSA_POLICY), live_verifiers)
    assert failure.why == "refused" and not failure.passes_on_retry, failure.detail
    assert "unaccepted_policy" in failure.detail and state.requests == 1


def test_front_down_is_unavailable_after_retries(live_verifiers: Verifiers) -> None:
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = _unavailable(_config(f"http://127.0.0.1:{port}/", retries=2), live_verifiers)
    assert failure.why == "unreachable" and failure.passes_on_retry


def test_slow_front_is_cut_at_the_timeout(
    front: tuple[Front, str], live_verifiers: Verifiers
) -> None:
    state, url = front
    state.delay = 5.0
    failure = _unavailable(_config(url, timeout=0.3, retries=1), live_verifiers)
    assert failure.why == "timeout" and state.requests == 2


@pytest.mark.parametrize("close_delimited", [False, True])
def test_oversized_body_is_refused(
    front: tuple[Front, str], live_verifiers: Verifiers, close_delimited: bool
) -> None:
    state, url = front
    state.oversize, state.close_delimited = True, close_delimited
    failure = _unavailable(_config(url), live_verifiers)
    assert failure.why == "too_big" and state.requests == 1


# -- openssl ts -verify accepts every token the project makes -------------------------------


def _ca_file(pki: DevPki, folder: Path) -> Path:
    path = folder / "process-ca.pem"
    path.write_bytes(pki.process_ca.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _verify(pki: DevPki, folder: Path, *args: str | Path) -> None:
    done = openssl(
        "ts",
        "-verify",
        *args,
        "-CAfile",
        _ca_file(pki, folder),
        "-attime",
        str(int(LATER.timestamp())),
    )
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0 and "Verification: OK" in out, out


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_openssl_verifies_dev_tsa_tokens_over_data(
    algorithm: str, pki: DevPki, rsa_pki: DevPki, tmp_path: Path
) -> None:
    chosen = pki if algorithm == "ec" else rsa_pki
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "token.der").write_bytes(LocalTsa(chosen.tsa).stamp(DATA, NOW))
    _verify(
        chosen, tmp_path, "-data", tmp_path / "data", "-in", tmp_path / "token.der", "-token_in"
    )
    _verify(
        chosen,
        tmp_path,
        "-digest",
        hashlib.sha256(DATA).hexdigest(),
        "-in",
        tmp_path / "token.der",
        "-token_in",
    )
    # And refuses it over other data.
    (tmp_path / "data").write_bytes(DATA + b"!")
    done = openssl(
        "ts",
        "-verify",
        "-data",
        tmp_path / "data",
        "-in",
        tmp_path / "token.der",
        "-token_in",
        "-CAfile",
        _ca_file(chosen, tmp_path),
        "-attime",
        str(int(LATER.timestamp())),
    )
    assert done.returncode != 0


def test_openssl_verifies_the_cades_t_signature_time_stamp(pki: DevPki, tmp_path: Path) -> None:
    tsa = LocalTsa(pki.tsa)
    der = sign_digest(
        pki.providers["hs01"].process,
        hashlib.sha256(b"content").digest(),
        NOW,
        timestamp=lambda signature: tsa.stamp(signature, NOW),
    )
    signer_info = cms.ContentInfo.load(der)["content"]["signer_infos"][0]  # read by asn1crypto
    (attribute,) = [
        a for a in signer_info["unsigned_attrs"] if a["type"].native == "signature_time_stamp_token"
    ]
    (tmp_path / "token.der").write_bytes(attribute["values"][0].dump())
    # CAdES-T (ETSI EN 319 122-1 §5.3): the token is over the SignerInfo's signature value.
    (tmp_path / "signature").write_bytes(bytes(signer_info["signature"].native))
    _verify(
        pki, tmp_path, "-data", tmp_path / "signature", "-in", tmp_path / "token.der", "-token_in"
    )


def test_openssl_verifies_dev_tsa_reply_to_our_request(pki: DevPki, tmp_path: Path) -> None:
    # -queryfile: OpenSSL checks the imprint, the nonce and the policy against our request.
    request = TimeStampRequest.build(DATA, 0xC0FFEE_0DDBA11, policy=DEV_TSA_POLICY)
    (tmp_path / "req.tsq").write_bytes(request.der)
    (tmp_path / "resp.tsr").write_bytes(respond(LocalTsa(pki.tsa), request.der, NOW))
    _verify(pki, tmp_path, "-queryfile", tmp_path / "req.tsq", "-in", tmp_path / "resp.tsr")


def test_openssl_reads_dev_tsa_refusal(pki: DevPki, tmp_path: Path) -> None:
    request = TimeStampRequest.build(DATA, 7, policy="1.2.3.4")
    (tmp_path / "resp.tsr").write_bytes(respond(LocalTsa(pki.tsa), request.der, NOW))
    done = openssl("ts", "-reply", "-in", tmp_path / "resp.tsr", "-text")
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, done.stderr
    assert "Status: Rejected" in out and "policy is not supported by the TSA" in out, out
