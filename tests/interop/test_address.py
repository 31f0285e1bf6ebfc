from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interop.address import AddressKind, KepAddress
from interop.errors import AddressError, ConfigurationError
from interop.providers import BUILTIN_DIRECTORY, Provider, ProviderDirectory


@pytest.mark.parametrize(
    ("text", "local", "domain", "provider", "kind"),
    [
        ("ali.yilmaz@hs01.kep.tr", "ali.yilmaz", "hs01.kep.tr", "hs01", AddressKind.NAMED),
        ("Ali.Yilmaz@HS03.KEP.TR", "ali.yilmaz", "hs03.kep.tr", "hs03", AddressKind.NAMED),
        ("ali.yilmaz.2@hs02.kep.tr", "ali.yilmaz.2", "hs02.kep.tr", "hs02", AddressKind.NAMED),
        (
            "0123456789012345@hs04.kep.tr",
            "0123456789012345",
            "hs04.kep.tr",
            "hs04",
            AddressKind.MERSIS,
        ),
        (
            "0123456789012345.muhasebe@hs05.kep.tr",
            "0123456789012345.muhasebe",
            "hs05.kep.tr",
            "hs05",
            AddressKind.MERSIS,
        ),
        ("acme-ltd@hs06.kep.tr", "acme-ltd", "hs06.kep.tr", "hs06", AddressKind.NAMED),
        ("acme.hukuk@hs07.kep.tr", "acme.hukuk", "hs07.kep.tr", "hs07", AddressKind.NAMED),
        ("kayseribm@tkgm.hs01.kep.tr", "kayseribm", "tkgm.hs01.kep.tr", "hs01", AddressKind.NAMED),
        ("delil@hs08.kep.tr", "delil", "hs08.kep.tr", "hs08", AddressKind.EVIDENCE),
        ("  ali.yilmaz@hs01.kep.tr ", "ali.yilmaz", "hs01.kep.tr", "hs01", AddressKind.NAMED),
    ],
)
def test_valid_addresses(
    text: str, local: str, domain: str, provider: str, kind: AddressKind
) -> None:
    address = KepAddress.parse(text)
    assert (address.local, address.domain, address.provider_id, address.kind) == (
        local,
        domain,
        provider,
        kind,
    )
    assert str(address) == f"{local}@{domain}"


def test_institution_and_mersis_accessors() -> None:
    assert KepAddress.parse("kayseribm@tkgm.hs01.kep.tr").institution == "tkgm"
    assert KepAddress.parse("a@hs01.kep.tr").institution is None
    assert KepAddress.parse("0123456789012345.x@hs01.kep.tr").mersis == "0123456789012345"
    assert KepAddress.from_uri("mailto:a.b@hs02.kep.tr").provider_id == "hs02"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("ali@gmail.com", "closed system"),
        ("ali@kep.tr.evil.com", "closed system"),
        ("ali@hs09.kep.tr", "no KEP provider"),
        ("ali.yılmaz@hs01.kep.tr", "ASCII"),
        ("ali@@hs01.kep.tr", "exactly one '@'"),
        ("alihs01.kep.tr", "exactly one '@'"),
        ("@hs01.kep.tr", "empty"),
        ("ali..veli@hs01.kep.tr", "dots"),
        (".ali@hs01.kep.tr", "dots"),
        ("ali.@hs01.kep.tr", "dots"),
        ("ali+tag@hs01.kep.tr", "letters, digits"),
        ('"ali"@hs01.kep.tr', "letters, digits"),
        ("-ali@hs01.kep.tr", "start and end"),
        ("12345@hs01.kep.tr", "16-digit MERSİS"),
        ("0123456789012345.a.b@hs01.kep.tr", "MERSİS address"),
        ("ali.2.veli@hs01.kep.tr", "may only end"),
        ("a" * 65 + "@hs01.kep.tr", "longer than 64"),
        ("ali@hs01..kep.tr", "not a valid domain"),
        ("ali@-x.hs01.kep.tr", "not a valid domain"),
        ("ali@hs01.kep.tr.", "not a valid domain"),
    ],
)
def test_invalid_addresses_say_why(text: str, fragment: str) -> None:
    with pytest.raises(AddressError) as caught:
        KepAddress.parse(text)
    assert fragment in caught.value.detail
    assert caught.value.smtp_reply.code == 553
    assert caught.value.smtp_reply.enhanced == "5.1.3"


def test_turkish_letters_get_a_suggestion() -> None:
    with pytest.raises(AddressError, match=re.escape("did you mean 'ayse.ozturk@hs01.kep.tr'")):
        KepAddress.parse("ayşe.öztürk@hs01.kep.tr")


def test_configured_provider_extends_the_directory() -> None:
    directory = BUILTIN_DIRECTORY.with_providers([Provider("hs09", "hs09.kep.tr", "Yeni")])
    assert KepAddress.parse("x@hs09.kep.tr", directory).provider_id == "hs09"
    with pytest.raises(AddressError):
        KepAddress.parse("x@hs09.kep.tr")


def test_directory_refuses_overlaps_and_bad_entries() -> None:
    with pytest.raises(ConfigurationError, match="overlapping"):
        ProviderDirectory((Provider("hs01", "hs01.kep.tr"), Provider("xx", "a.hs01.kep.tr")))
    with pytest.raises(ConfigurationError, match="twice"):
        ProviderDirectory((Provider("hs01", "hs01.kep.tr"), Provider("hs01", "hs02.kep.tr")))
    with pytest.raises(ConfigurationError, match="not a domain under"):
        Provider("hs10", "example.com")


_label = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@given(
    first=_label,
    last=_label,
    number=st.one_of(st.none(), st.integers(1, 99)),
    provider=st.sampled_from(sorted(p.id for p in BUILTIN_DIRECTORY)),
    upper=st.booleans(),
)
def test_natural_person_addresses_round_trip(
    first: str, last: str, number: int | None, provider: str, upper: bool
) -> None:
    local = f"{first}.{last}" + (f".{number}" if number is not None else "")
    text = f"{local}@{provider}.kep.tr"
    address = KepAddress.parse(text.upper() if upper else text)
    assert str(address) == text
    assert KepAddress.parse(str(address)) == address
    assert address.provider_id == provider


@given(st.text(max_size=80))
def test_parse_never_crashes(text: str) -> None:
    try:
        address = KepAddress.parse(text)
    except AddressError as exc:
        assert exc.detail
    else:
        assert str(address).endswith(".kep.tr")
        assert KepAddress.parse(str(address)) == address
