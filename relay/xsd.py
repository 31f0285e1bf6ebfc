"""Load the ETSI evidence schema from a folder (it is never copied into the project)."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from interop.errors import ConfigurationError

SCHEMA_FILE = "TS02640_v2.xsd"


def load_schema(folder: Path) -> etree.XMLSchema:
    """The schema in ``folder``; ``ConfigurationError`` naming the folder or file when it is
    missing, unreadable or does not compile (a wrong folder is the caller's mistake, never a
    verdict on what is validated)."""
    path = folder / SCHEMA_FILE
    if not folder.is_dir():
        raise ConfigurationError(f"{folder}: no such folder")
    if not path.is_file():
        raise ConfigurationError(
            f"{folder}: no {SCHEMA_FILE} there (give the folder of the ETSI TS 102 640-2 schema)"
        )
    # Imports resolve to files beside it; nothing is fetched from the network.
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        return etree.XMLSchema(etree.parse(str(path), parser))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read: {exc}") from exc
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        raise ConfigurationError(f"{path}: the schema does not compile: {exc}") from exc
