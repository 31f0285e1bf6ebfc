"""python-xmlsec and lxml must run on one libxml2 (pyproject.toml pins them together).

Built on different ones, the import works but signing fails at run time, or crashes: this
fails at once instead, naming both versions.
"""

from __future__ import annotations

import xmlsec
from lxml import etree


def test_xmlsec_and_lxml_share_one_libxml2() -> None:
    assert xmlsec.get_libxml_version() == etree.LIBXML_VERSION, (
        f"python-xmlsec runs on libxml2 {xmlsec.get_libxml_version()}, "
        f"lxml on {etree.LIBXML_VERSION}: install wheels built together (pyproject.toml)"
    )
    assert xmlsec.get_libxml_compiled_version() == etree.LIBXML_COMPILED_VERSION
