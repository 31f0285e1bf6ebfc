"""Who a signature speaks for: Turkish identity numbers in e-imza certificates (profile §1,
"Account holders").

Turkish qualified certificates carry the holder's national identity number in the subject's
``serialNumber`` attribute (X.520, OID 2.5.4.5): the TC Kimlik No of a citizen, or the YKN of a
foreigner (which starts with 99). Both are 11 digits, the first never 0, with two check digits:
the tenth is (7 × (d1 + d3 + d5 + d7 + d9) − (d2 + d4 + d6 + d8)) mod 10, the eleventh the
sum of the first ten mod 10. ETSI EN 319 412-1 §5.1.3 writes the same number as a semantics
identifier, ``IDCTR-<number>``; both forms are read.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from interop.errors import IdentityNumberError

DIGITS = 11
# ETSI EN 319 412-1 §5.1.3: "IDC" (national identity card number), country, hyphen.
SEMANTICS_PREFIX = "IDCTR-"
FOREIGNER_PREFIX = "99"  # YKN, yabancı kimlik numarası


def check_digits(first_nine: str) -> str:
    """The two check digits of a TC Kimlik No / YKN whose first nine digits are given."""
    d = [int(c) for c in first_nine]
    tenth = (7 * sum(d[0:9:2]) - sum(d[1:8:2])) % 10
    eleventh = (sum(d) + tenth) % 10
    return f"{tenth}{eleventh}"


@dataclass(frozen=True, slots=True)
class NationalId:
    """A valid TC Kimlik No or YKN. Build it with ``parse``."""

    number: str

    def __str__(self) -> str:
        return self.number

    @property
    def foreigner(self) -> bool:
        return self.number.startswith(FOREIGNER_PREFIX)

    @classmethod
    def parse(cls, text: str) -> NationalId:
        """Validate length, digits and check digits; ``IdentityNumberError`` says what is wrong."""
        raw = text.strip()
        if raw.upper().startswith(SEMANTICS_PREFIX):
            raw = raw[len(SEMANTICS_PREFIX) :]
        if len(raw) != DIGITS or not raw.isascii() or not raw.isdigit():
            raise IdentityNumberError(f"{text!r}: a TC Kimlik No or YKN is {DIGITS} digits")
        if raw[0] == "0":
            raise IdentityNumberError(f"{text!r}: a TC Kimlik No or YKN does not start with 0")
        if raw[9:] != check_digits(raw[:9]):
            raise IdentityNumberError(f"{text!r}: the check digits are wrong")
        return cls(raw)


def make_number(first_nine: int) -> NationalId:
    """A valid number from nine leading digits (development PKI and tests)."""
    head = f"{first_nine:09d}"
    return NationalId.parse(head + check_digits(head))


def certificate_number(cert: x509.Certificate) -> NationalId | None:
    """The identity number a user's certificate names, or None when it names no valid one."""
    try:
        values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    except ValueError:  # a name cryptography cannot read: it names nobody
        return None
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    try:
        return NationalId.parse(values[0].value)
    except IdentityNumberError:
        return None
