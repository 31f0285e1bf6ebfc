"""Detached CMS SignedData (RFC 5652) with CAdES-BES attributes and RFC 3161 time-stamps.

``asn1crypto`` parses and encodes the structures; ``cryptography`` does the primitives.
Content is never handed in whole: callers pass its digest (see ``interop.cms.hashing``).
"""

from interop.cms import asn1_lengths

asn1_lengths.install()
