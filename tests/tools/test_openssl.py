"""Our CMS against OpenSSL's, both directions (an implementation nobody here wrote)."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.verify import verify_parsed
from interop.envelope.parse import parse_envelope
from interop.envelope.smime import build_signed_message
from interop.pki.devpki import DevPki
from interop.pki.signer import Signer
from interop.reasons import Reason
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW, make_dispatch, need_tool

pytestmark = pytest.mark.tool
CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nKEP iletisi \xc3\xa7\xc4\x9f\r\n"


def _pem(signer: Signer, folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(signer.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        signer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _ca(pki: DevPki, folder: Path, which: str) -> Path:
    ca = {"process": pki.process_ca, "user": pki.user_ca}[which]
    path = folder / f"{which}-ca.pem"
    path.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_tool("openssl"), *map(str, args)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_openssl_verifies_our_signatures(
    algorithm: str, pki: DevPki, rsa_pki: DevPki, tmp_path: Path
) -> None:
    chosen = pki if algorithm == "ec" else rsa_pki
    der = sign_digest(chosen.providers["hs01"].process, hashlib.sha256(CONTENT).digest(), NOW)
    (tmp_path / "content").write_bytes(CONTENT)
    (tmp_path / "sig.der").write_bytes(der)
    done = _openssl(
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        tmp_path / "sig.der",
        "-content",
        tmp_path / "content",
        "-CAfile",
        _ca(chosen, tmp_path, "process"),
        "-purpose",
        "smimesign",
        "-attime",
        str(int(LATER.timestamp())),
        "-out",
        "/dev/null",
    )
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr
    # And it refuses the same signature over other content.
    (tmp_path / "content").write_bytes(CONTENT + b"x")
    refused = _openssl(
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        tmp_path / "sig.der",
        "-content",
        tmp_path / "content",
        "-CAfile",
        _ca(chosen, tmp_path, "process"),
        "-attime",
        str(int(LATER.timestamp())),
        "-out",
        "/dev/null",
    )
    assert refused.returncode != 0


def test_openssl_verifies_our_envelope_as_smime(pki: DevPki, tmp_path: Path) -> None:
    path = tmp_path / "dispatch.eml"
    path.write_bytes(make_dispatch(pki).dispatch)
    done = _openssl(
        "smime",
        "-verify",
        "-in",
        path,
        "-CAfile",
        _ca(pki, tmp_path, "process"),
        "-purpose",
        "any",
        "-attime",
        str(int(LATER.timestamp())),
        "-out",
        tmp_path / "inner",
    )
    assert done.returncode == 0, done.stderr
    inner = (tmp_path / "inner").read_bytes()
    assert b"multipart/mixed" in inner and b"ileti.eml" in inner


def test_openssl_verifies_our_user_messages(pki: DevPki, tmp_path: Path) -> None:
    path = tmp_path / "user.eml"
    path.write_bytes(
        build_signed_message(
            pki.user("ali.yilmaz@hs01.kep.tr").signer,
            sender="ali.yilmaz@hs01.kep.tr",
            recipients=["ayse.demir@hs02.kep.tr"],
            subject="Konu",
            body="Merhaba",
            now=NOW,
        )
    )
    done = _openssl(
        "smime",
        "-verify",
        "-in",
        path,
        "-CAfile",
        _ca(pki, tmp_path, "user"),
        "-attime",
        str(int(LATER.timestamp())),
        "-out",
        "/dev/null",
    )
    assert done.returncode == 0, done.stderr


def _openssl_sign(signer: Signer, tmp_path: Path, *extra: str) -> bytes:
    cert, key = _pem(signer, tmp_path, "signer")
    (tmp_path / "content").write_bytes(CONTENT)
    done = _openssl(
        "cms",
        "-sign",
        "-binary",
        "-in",
        tmp_path / "content",
        "-signer",
        cert,
        "-inkey",
        key,
        "-outform",
        "DER",
        "-out",
        tmp_path / "out.der",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return (tmp_path / "out.der").read_bytes()


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_we_verify_openssl_signatures(
    algorithm: str,
    pki: DevPki,
    rsa_pki: DevPki,
    verifiers: Verifiers,
    rsa_verifiers: Verifiers,
    tmp_path: Path,
) -> None:
    chosen, chosen_verifiers = (pki, verifiers) if algorithm == "ec" else (rsa_pki, rsa_verifiers)
    der = _openssl_sign(chosen.user("ali.yilmaz@hs01.kep.tr").signer, tmp_path)
    parsed = ParsedSignedData.parse(der)
    result = verify_parsed(
        parsed, hashlib.new(parsed.digest_algorithm, CONTENT).digest(), LATER, chosen_verifiers.user
    )
    assert result.ok, result.detail
    tampered = verify_parsed(
        parsed, hashlib.sha256(CONTENT + b"!").digest(), LATER, chosen_verifiers.user
    )
    assert tampered.reason is Reason.InvalidUserSignature


def test_we_verify_openssl_cades_and_pss(
    pki: DevPki, rsa_pki: DevPki, rsa_verifiers: Verifiers, verifiers: Verifiers, tmp_path: Path
) -> None:
    cades = ParsedSignedData.parse(_openssl_sign(pki.providers["hs01"].process, tmp_path, "-cades"))
    result = verify_parsed(
        cades,
        hashlib.sha256(CONTENT).digest(),
        LATER,
        verifiers.process("hs01"),
        expected_names=["hs01.kep.tr"],
        require_cades=True,
    )
    assert result.ok and result.cades, result.detail
    pss = ParsedSignedData.parse(
        _openssl_sign(
            rsa_pki.user("ali.yilmaz@hs01.kep.tr").signer,
            tmp_path,
            "-keyopt",
            "rsa_padding_mode:pss",
        )
    )
    assert verify_parsed(pss, hashlib.sha256(CONTENT).digest(), LATER, rsa_verifiers.user).ok


def test_openssl_sha1_signature_is_refused(
    pki: DevPki, verifiers: Verifiers, tmp_path: Path
) -> None:
    der = _openssl_sign(pki.user("ali.yilmaz@hs01.kep.tr").signer, tmp_path, "-md", "sha1")
    parsed = ParsedSignedData.parse(der)
    assert parsed.digest_algorithm == "sha1"
    result = verify_parsed(parsed, hashlib.sha1(CONTENT).digest(), LATER, verifiers.user)  # noqa: S324
    assert result.reason is Reason.InvalidUserSignature and "SHA1" in result.detail


def test_openssl_signature_without_attributes_or_certificates(
    pki: DevPki, verifiers: Verifiers, tmp_path: Path
) -> None:
    signer = pki.user("ali.yilmaz@hs01.kep.tr").signer
    no_attrs = ParsedSignedData.parse(_openssl_sign(signer, tmp_path, "-noattr"))
    result = verify_parsed(no_attrs, hashlib.sha256(CONTENT).digest(), LATER, verifiers.user)
    assert result.reason is Reason.InvalidUserSignature and "no signed attributes" in result.detail
    from interop.errors import CmsFormatError

    with pytest.raises(CmsFormatError, match="no certificates"):
        ParsedSignedData.parse(_openssl_sign(signer, tmp_path, "-nocerts"))


def _openssl_verifies_token(pki: DevPki, tmp_path: Path, data: Path, token: Path) -> None:
    """``openssl ts -verify``: ``token`` (DER) stamps the bytes of ``data``, its TSA chains to
    the development process CA, at LATER."""
    done = _openssl(
        "ts",
        "-verify",
        "-data",
        data,
        "-in",
        token,
        "-token_in",
        "-CAfile",
        _ca(pki, tmp_path, "process"),
        "-attime",
        str(int(LATER.timestamp())),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verification: OK" in done.stdout


def test_openssl_verifies_our_time_stamp_token(pki: DevPki, tmp_path: Path) -> None:
    from interop.cms.timestamp import LocalTsa

    data = b"the signature value being stamped"
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "token.der").write_bytes(LocalTsa(pki.tsa).stamp(data, NOW))
    _openssl_verifies_token(pki, tmp_path, tmp_path / "data", tmp_path / "token.der")


def test_envelope_signature_covers_exactly_the_first_part(pki: DevPki, tmp_path: Path) -> None:
    data = make_dispatch(pki).dispatch
    envelope = parse_envelope(io.BytesIO(data))
    (tmp_path / "part").write_bytes(data[envelope.signed.start : envelope.signed.end])
    # The signature as the envelope carried it: OpenSSL checks it over the span.
    (tmp_path / "sig.der").write_bytes(envelope.signature.der)
    done = _openssl(
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        tmp_path / "sig.der",
        "-content",
        tmp_path / "part",
        "-CAfile",
        _ca(pki, tmp_path, "process"),
        "-purpose",
        "any",
        "-attime",
        str(int(LATER.timestamp())),
        "-out",
        "/dev/null",
    )
    assert done.returncode == 0, done.stderr


def test_openssl_verifies_the_xades_t_token_over_the_signature_value(
    pki: DevPki, tmp_path: Path
) -> None:
    """The token in a XAdES-T evidence stamps the exclusive-canonical ds:SignatureValue
    (ETSI EN 319 132-1 §5.3), here written out by hand from the document's text."""
    import base64

    from lxml import etree

    from interop.cms.timestamp import LocalTsa
    from interop.evidence.codes import DS_NS
    from interop.evidence.xades import sign_evidence
    from interop.evidence.xades_t import XADES_NS
    from tests.interop.test_evidence import evidence

    tsa = LocalTsa(pki.tsa)
    data = sign_evidence(
        evidence(), pki.providers["hs02"].process, NOW, timestamp=lambda d: tsa.stamp(d, NOW)
    )
    root = etree.fromstring(data)
    # The text as it is: the line breaks of the base64 are character data, and canonical.
    value = root.findtext(f".//{{{DS_NS}}}SignatureValue") or ""
    token = root.findtext(f".//{{{XADES_NS}}}EncapsulatedTimeStamp") or ""
    (tmp_path / "data").write_bytes(
        f'<ds:SignatureValue xmlns:ds="{DS_NS}">{value}</ds:SignatureValue>'.encode()
    )
    (tmp_path / "token.der").write_bytes(base64.b64decode(token))
    _openssl_verifies_token(pki, tmp_path, tmp_path / "data", tmp_path / "token.der")


def _openssl_reads_token(pki: DevPki, tmp_path: Path, name: str, token: bytes) -> str:
    """``openssl ts -verify`` of ``token`` over DATA_STAMPED, then its TSTInfo as text."""
    path = tmp_path / f"{name}.der"
    path.write_bytes(token)
    (tmp_path / "stamped").write_bytes(DATA_STAMPED)
    _openssl_verifies_token(pki, tmp_path, tmp_path / "stamped", path)
    text = _openssl("ts", "-reply", "-in", path, "-token_in", "-text")
    assert text.returncode == 0, text.stderr
    return text.stdout


DATA_STAMPED = b"a signature value"


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_token_from_cached_parts_means_what_the_plain_one_does(
    algorithm: str, pki: DevPki, rsa_pki: DevPki, tmp_path: Path
) -> None:
    """A token made from the TSA's cached DER parts and one built from Python values with
    nothing cached (tests/interop/reference_cms.py): OpenSSL verifies both and reads the
    same TSTInfo from them."""
    from interop.cms import sign
    from interop.cms.timestamp import token_for_imprint
    from tests.interop import reference_cms

    chosen = pki if algorithm == "ec" else rsa_pki
    hashed = hashlib.sha256(DATA_STAMPED).digest()
    sign._parts.cache_clear()
    tokens = [token_for_imprint(chosen.tsa, "sha256", hashed, NOW, 4242, nonce=7) for _ in range(2)]
    plain = reference_cms.time_stamp_token(chosen.tsa, "sha256", hashed, NOW, 4242, nonce=7)
    texts = {
        _openssl_reads_token(chosen, tmp_path, name, token)
        for name, token in (("first", tokens[0]), ("cached", tokens[1]), ("plain", plain))
    }
    assert len(texts) == 1, texts
    assert "Nonce: 0x07" in texts.pop()
