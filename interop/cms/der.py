"""Put DER together from pieces asn1crypto has already encoded.

asn1crypto re-encodes a structure built from Python values on every ``dump`` and builds it
through several layers of ``__setitem__``: a SignedData cost 0.4 ms to make, fifteen times its
ECDSA signature. Signing therefore keeps what never changes for a signer as DER
(``interop.cms.sign``), lets asn1crypto's own types encode each value that changes, and only
wraps the pieces here with ``asn1crypto.parser.emit``, which writes the DER header (tag and
definite length) around contents. Nothing here encodes a value itself.

The one DER rule assembly has to keep is X.690 §11.6: the elements of a SET OF are in the
order of their encodings, as asn1crypto's ``SetOf`` sorts them.
"""

from __future__ import annotations

from asn1crypto import core, parser

_UNIVERSAL = 0
_CONTEXT = 2
_CONSTRUCTED = 1


def sequence(*elements: bytes) -> bytes:
    """A SEQUENCE of the encoded ``elements``, in the order given (the type's field order)."""
    der: bytes = parser.emit(_UNIVERSAL, _CONSTRUCTED, core.Sequence.tag, b"".join(elements))
    return der


def set_of_contents(*elements: bytes) -> bytes:
    """The contents of a SET OF the encoded ``elements``: sorted, as DER orders them."""
    return b"".join(sorted(elements))


def set_of(*elements: bytes) -> bytes:
    der: bytes = parser.emit(_UNIVERSAL, _CONSTRUCTED, core.SetOf.tag, set_of_contents(*elements))
    return der


def tagged(number: int, contents: bytes) -> bytes:
    """A constructed context-specific ``[number]``: an EXPLICIT tag around one encoded value,
    or an IMPLICIT one standing for a SEQUENCE or SET whose contents are given."""
    der: bytes = parser.emit(_CONTEXT, _CONSTRUCTED, number, contents)
    return der


def attribute(type_der: bytes, *values: bytes) -> bytes:
    """RFC 5652 §5.3 Attribute: SEQUENCE { attrType, attrValues SET OF AttributeValue }."""
    return sequence(type_der, set_of(*values))
