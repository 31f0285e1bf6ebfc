"""Independent judges: OpenSSL for the envelope's CMS, xmlsec1 for the evidence's XML
signature, the ETSI XSD through lxml, and Python's ``email`` package for the MIME tree.

None of them is the project's own code, so a fault the project's library shares with a target
(both built from the same misreading) still shows. Takes bytes and the PKI's CA files; promises
a ``ToolVerdict`` (ok, what the tool said); raises ``ConfigurationError`` only when a tool or
the schema is missing, which the runner reports once instead of failing every case.
"""

from __future__ import annotations

import copy
import email
import email.policy
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from lxml import etree

from interop.errors import ConfigurationError

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
SCHEMA_FILE = "TS02640_v2.xsd"
TOOL_TIMEOUT = 60.0  # seconds; a tool that takes longer than this on a few KiB is stuck
OUTPUT_KEPT = 2000  # characters of a tool's output kept for the report


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    ok: bool
    detail: str
    output: bytes = b""


def need(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigurationError(f"{name} is not installed; the suite needs it")
    return path


def run_tool(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=TOOL_TIMEOUT, check=False)


def said(done: subprocess.CompletedProcess[bytes]) -> str:
    text = (done.stderr + done.stdout).decode("utf-8", "replace").strip()
    return " ".join(text.split())[:OUTPUT_KEPT]


def openssl_verify_smime(message: bytes, ca_file: Path) -> ToolVerdict:
    """``openssl cms -verify`` of an S/MIME multipart/signed message, read by OpenSSL's own
    MIME parser; the signer must chain to ``ca_file``. The signed content comes back."""
    with tempfile.TemporaryDirectory(prefix="kep-conformance-") as folder:
        source, inner = Path(folder) / "message.eml", Path(folder) / "inner"
        source.write_bytes(message)
        done = run_tool(
            [
                need("openssl"),
                "cms",
                "-verify",
                "-inform",
                "SMIME",
                "-in",
                str(source),
                "-CAfile",
                str(ca_file),
                # Key usages are the profile's business (§1), judged by the cases.
                "-purpose",
                "any",
                "-out",
                str(inner),
            ]
        )
        output = inner.read_bytes() if inner.exists() else b""
    return ToolVerdict(done.returncode == 0, f"openssl cms -verify: {said(done)}", output)


def openssl_verify_detached(content: bytes, signature_der: bytes, ca_file: Path) -> ToolVerdict:
    """``openssl cms -verify`` of a detached DER signature over ``content``."""
    with tempfile.TemporaryDirectory(prefix="kep-conformance-") as folder:
        data, sig = Path(folder) / "content", Path(folder) / "sig.der"
        data.write_bytes(content)
        sig.write_bytes(signature_der)
        done = run_tool(
            [
                need("openssl"),
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                str(sig),
                "-content",
                str(data),
                "-CAfile",
                str(ca_file),
                "-purpose",
                "any",
                "-out",
                "/dev/null",
            ]
        )
    return ToolVerdict(done.returncode == 0, f"openssl cms -verify: {said(done)}")


def xmlsec_verify(xml: bytes, ca_file: Path) -> ToolVerdict:
    """``xmlsec1 --verify`` of an enveloped XML signature, its certificate chained to
    ``ca_file``; XAdES SignedProperties is referenced by its Id attribute."""
    with tempfile.TemporaryDirectory(prefix="kep-conformance-") as folder:
        source = Path(folder) / "delil.xml"
        source.write_bytes(xml)
        done = run_tool(
            [
                need("xmlsec1"),
                "--verify",
                "--trusted-pem",
                str(ca_file),
                "--id-attr:Id",
                f"{XADES_NS}:SignedProperties",
                str(source),
            ]
        )
    return ToolVerdict(done.returncode == 0, f"xmlsec1 --verify: {said(done)}")


# Refuses DTDs and entities (§5): what the XSD is shown must be the document as it is.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class Schema:
    """The ETSI TS 102 640-2 v2 XSD (never copied into the project: given by folder)."""

    def __init__(self, folder: Path) -> None:
        path = folder / SCHEMA_FILE
        if not path.is_file():
            raise ConfigurationError(f"{folder}: no {SCHEMA_FILE} there (see --xsd)")
        try:
            self.schema = etree.XMLSchema(etree.parse(str(path), _PARSER))
        except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            raise ConfigurationError(f"{path}: the schema does not compile: {exc}") from exc

    def judge(self, xml: bytes) -> ToolVerdict:
        """Valid against the XSD with ``ds:Signature`` removed (§5: the bundled XAdES 1.3.2
        schema predates SigningCertificateV2; the signature is verified separately)."""
        if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
            return ToolVerdict(False, "XSD: the evidence carries a DTD or entity declarations (§5)")
        try:
            root = copy.deepcopy(etree.fromstring(xml, _PARSER))
        except etree.XMLSyntaxError as exc:
            return ToolVerdict(False, f"XSD: not well-formed XML: {exc}")
        for signature in root.findall(f"{{{DS_NS}}}Signature"):
            root.remove(signature)
        if self.schema.validate(root):
            return ToolVerdict(True, "XSD: valid (ds:Signature removed)")
        log: Any = self.schema.error_log
        errors = "; ".join(f"line {e.line}: {e.message}" for e in log)
        return ToolVerdict(False, f"XSD: {errors[:OUTPUT_KEPT]}")


def mime(data: bytes) -> Message:
    """The message as Python's ``email`` package reads it (not the project's MIME reader)."""
    return email.message_from_bytes(data, policy=email.policy.compat32)


def subparts(message: Message) -> list[Message]:
    """The parts of a multipart entity (none for a leaf)."""
    payload = message.get_payload() if message.is_multipart() else []
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def xml_parts(message: Message) -> list[bytes]:
    """Every application/xml (or text/xml) part, decoded: ``delil.xml``."""
    found = []
    for part in message.walk():
        if part.get_content_type() in ("application/xml", "text/xml"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(payload)
    return found


def smime_signature(data: bytes) -> bytes | None:
    """The decoded smime.p7s of an S/MIME message (the first pkcs7-signature part)."""
    for part in mime(data).walk():
        if part.get_content_type() in (
            "application/pkcs7-signature",
            "application/x-pkcs7-signature",
        ):
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


def parse_xml(xml: bytes) -> etree._Element | None:
    try:
        return etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError:
        return None
