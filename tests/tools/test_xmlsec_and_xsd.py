"""Our evidence against xmlsec1 and the ETSI XSD (implementations nobody here wrote)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from interop.cms.timestamp import LocalTsa
from interop.evidence.codes import EVENTS_OF_TYPE
from interop.evidence.schema import schema_errors
from interop.evidence.xades import sign_evidence
from interop.evidence.xades_t import XADES_NS
from interop.pki.devpki import DevPki
from relay.xsd import load_schema
from tests.helpers import NOW, XSD_DIR, need_tool
from tests.interop.test_evidence import evidence

pytestmark = pytest.mark.tool


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    if not XSD_DIR.is_dir():
        pytest.fail(f"the ETSI XSD is expected at {XSD_DIR} (shared/ beside the project)")
    return load_schema(XSD_DIR)


def _xmlsec(pki: DevPki, data: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "evidence.xml").write_bytes(data)
    (tmp_path / "ca.pem").write_bytes(
        pki.process_ca.certificate.public_bytes(serialization.Encoding.PEM)
    )
    return subprocess.run(
        [
            need_tool("xmlsec1"),
            "--verify",
            "--trusted-pem",
            str(tmp_path / "ca.pem"),
            # XAdES SignedProperties is referenced by its Id attribute.
            "--id-attr:Id",
            "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
            "--verification-gmt-time",
            NOW.strftime("%Y-%m-%d %H:%M:%S"),
            str(tmp_path / "evidence.xml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _xades_t(pki: DevPki) -> bytes:
    """XAdES-T evidence (profile 1.1 §5): a SignatureTimeStamp from the dev TSA."""
    tsa = LocalTsa(pki.tsa)
    return sign_evidence(
        evidence(), pki.providers["hs02"].process, NOW, timestamp=lambda d: tsa.stamp(d, NOW)
    )


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
@pytest.mark.parametrize("form", ["XAdES-BES", "XAdES-T"])
def test_xmlsec1_verifies_our_evidence(
    algorithm: str, form: str, pki: DevPki, rsa_pki: DevPki, tmp_path: Path
) -> None:
    chosen = pki if algorithm == "ec" else rsa_pki
    if form == "XAdES-T":
        data = _xades_t(chosen)
        assert b"SignatureTimeStamp" in data
    else:
        data = sign_evidence(evidence(), chosen.providers["hs02"].process, NOW)
    done = _xmlsec(chosen, data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stderr and "3/3" in done.stderr


@pytest.mark.parametrize("form", ["XAdES-BES", "XAdES-T"])
def test_xmlsec1_refuses_changed_evidence(form: str, pki: DevPki, tmp_path: Path) -> None:
    signed = (
        _xades_t(pki)
        if form == "XAdES-T"
        else sign_evidence(evidence(), pki.providers["hs02"].process, NOW)
    )
    assert _xmlsec(pki, signed.replace(b"rem-1@", b"rem-9@"), tmp_path).returncode != 0


def test_xsd_accepts_xades_t_evidence(pki: DevPki, schema: etree.XMLSchema) -> None:
    assert schema_errors(schema, _xades_t(pki)) == []


def test_xades_132_schema_accepts_our_unsigned_properties(pki: DevPki) -> None:
    """The bundled XAdES 1.3.2 XSD predates SigningCertificateV2, so only the unsigned part
    (what XAdES-T adds, §7.3 of that version) is checked against it."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    xades = etree.XMLSchema(etree.parse(str(XSD_DIR / "XAdES.xsd"), parser))
    unsigned = etree.fromstring(_xades_t(pki)).find(f".//{{{XADES_NS}}}UnsignedProperties")
    assert unsigned is not None
    assert xades.validate(copy.deepcopy(unsigned)), xades.error_log


@pytest.mark.parametrize(
    ("kind", "event"),
    [(kind, event) for kind, events in EVENTS_OF_TYPE.items() for event in events],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_xsd_accepts_every_signed_evidence(
    kind: object, event: object, pki: DevPki, schema: etree.XMLSchema
) -> None:
    data = sign_evidence(evidence(kind, event), pki.providers["hs02"].process, NOW)  # type: ignore[arg-type]
    assert schema_errors(schema, data) == []


def test_xsd_catches_what_the_profile_forbids(schema: etree.XMLSchema, pki: DevPki) -> None:
    data = sign_evidence(evidence(), pki.providers["hs02"].process, NOW)
    # EventTime after SenderDetails breaks the XSD's sequence.
    root = etree.fromstring(data)
    ns = "{http://uri.etsi.org/02640/v2#}"
    event_time = root.find(ns + "EventTime")
    root.remove(event_time)  # type: ignore[arg-type]
    root.insert(len(root) - 2, event_time)  # type: ignore[arg-type]
    assert schema_errors(schema, etree.tostring(root))
