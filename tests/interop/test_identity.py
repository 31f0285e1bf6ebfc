"""TC Kimlik No / YKN: validated with their check digits, read from certificates (profile §1)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from interop.errors import IdentityNumberError
from interop.identity import NationalId, certificate_number, check_digits, make_number
from interop.pki.devpki import DevPki


@pytest.mark.parametrize(
    "text",
    ["10000000146", "IDCTR-10000000146", " 10000000146 ", "99000000042"],
)
def test_valid_numbers(text: str) -> None:
    number = NationalId.parse(text)
    assert number.number == text.strip().removeprefix("IDCTR-")
    assert number.foreigner is number.number.startswith("99")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10000000147", "check digits"),  # last digit off by one
        ("10000000156", "check digits"),
        ("1000000014", "11 digits"),
        ("100000001466", "11 digits"),
        ("01234567890", "start with 0"),
        ("1000000014a", "11 digits"),
        ("١٠٠٠٠٠٠٠١٤٦", "11 digits"),  # Arabic-Indic digits are digits to Python, not here
        ("", "11 digits"),
    ],
)
def test_invalid_numbers_say_why(text: str, why: str) -> None:
    with pytest.raises(IdentityNumberError, match=why):
        NationalId.parse(text)


@given(st.integers(100_000_000, 999_999_999))
def test_every_made_number_is_valid_and_one_changed_digit_is_not(head: int) -> None:
    number = str(make_number(head))
    assert NationalId.parse(number).number == number
    changed = number[:4] + str((int(number[4]) + 1) % 10) + number[5:]
    with pytest.raises(IdentityNumberError):
        NationalId.parse(changed)


def test_check_digits_of_a_known_number() -> None:
    assert check_digits("100000001") == "46"


def _certificate(*attributes: x509.NameAttribute[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x"), *attributes])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_the_number_in_a_certificate() -> None:
    serial = x509.NameAttribute(NameOID.SERIAL_NUMBER, "IDCTR-10000000146")
    assert certificate_number(_certificate(serial)) == NationalId("10000000146")
    assert certificate_number(_certificate()) is None  # names nobody
    wrong = x509.NameAttribute(NameOID.SERIAL_NUMBER, "10000000147")
    assert certificate_number(_certificate(wrong)) is None
    two = x509.NameAttribute(NameOID.SERIAL_NUMBER, "99000000042")
    assert certificate_number(_certificate(serial, two)) is None  # ambiguous: nobody


def test_every_development_user_carries_a_valid_number(pki: DevPki) -> None:
    numbers = [u.number for u in pki.users]
    assert len(set(numbers)) == len(numbers)
    for user in pki.users:
        assert certificate_number(user.signer.certificate) == NationalId(user.number)
