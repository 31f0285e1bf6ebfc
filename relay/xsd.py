"""Load the ETSI evidence schema from a folder (it is never copied into the project)."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from interop.errors import ConfigurationError

SCHEMA_FILE = "TS02640_v2.xsd"


def load_schema(folder: Path) -> etree.XMLSchema:
    path = folder / SCHEMA_FILE
    if not path.is_file():
        raise ConfigurationError(f"{folder}: no {SCHEMA_FILE} there")
    # Imports resolve to files beside it; nothing is fetched from the network.
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        return etree.XMLSchema(etree.parse(str(path), parser))
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        raise ConfigurationError(f"{path}: the schema does not compile: {exc}") from exc
