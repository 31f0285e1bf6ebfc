"""Validation against the ETSI TS 102 640-2 v2 XSD, with ``ds:Signature`` removed (§5).

The bundled XAdES 1.3.2 schema predates SigningCertificateV2, so the signature subtree is
validated by verifying it (``interop.evidence.xades``), not by the schema. The caller loads the
schema (``relay.xsd``): reading schema files is I/O.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from interop.evidence.codes import DS_NS
from interop.evidence.xmlio import safe_parse


def schema_errors(schema: etree.XMLSchema, data: bytes) -> list[str]:
    """Schema violations of evidence ``data`` (empty when valid)."""
    root = copy.deepcopy(safe_parse(data))
    for signature in root.findall(f"{{{DS_NS}}}Signature"):
        root.remove(signature)
    if schema.validate(root):
        return []
    log: Any = schema.error_log
    return [f"line {e.line}: {e.message}" for e in log]
