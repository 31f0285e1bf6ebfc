"""KEP addresses (KEP Rehberi Tebliği, as summarised in KEP-DOMAIN.md "Rules").

Forms accepted, all under a provider's domain or an institution subdomain of it:

* natural person ``ad.soyad@hsNN.kep.tr`` or ``ad.soyad.N@…`` (N: digits, when the name is taken);
* legal person ``MERSİSNo@…`` or ``MERSİSNo.serbest@…`` (MERSİS numbers are 16 digits);
* legal person ``tüzelkişiadı@…`` or ``tüzelkişiadı.serbest@…``.

Addresses are ASCII (Turkish letters are written without marks: ş→s, ı→i) and compared in lower
case. The local part syntax is the dot-atom of RFC 5322 restricted to letters, digits, ``-`` and
``_``: quoted strings and the rarer atext characters never occur in KEP and are refused.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from interop.errors import AddressError
from interop.limits import DEFAULT_LIMITS
from interop.providers import (
    BUILTIN_DIRECTORY,
    KEP_ROOT_DOMAIN,
    Provider,
    ProviderDirectory,
    is_valid_domain,
)

MERSIS_DIGITS = 16
EVIDENCE_LOCAL_PART = "delil"
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
_TURKISH_HINT = str.maketrans("çğıöşüÇĞİÖŞÜ", "cgiosuCGIOSU")


class AddressKind(enum.Enum):
    MERSIS = "mersis"  # legal person by MERSİS number
    NAMED = "named"  # a natural person's name or a legal person's name (not told apart by syntax)
    EVIDENCE = "evidence"  # delil@, the provider's reserved evidence address


@dataclass(frozen=True, slots=True)
class KepAddress:
    """A valid, normalised KEP address. Build it with ``parse``."""

    local: str
    domain: str
    provider: Provider
    kind: AddressKind

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def provider_id(self) -> str:
        return self.provider.id

    @property
    def institution(self) -> str | None:
        """The institution subdomain label(s), e.g. ``tkgm`` in ``x@tkgm.hs01.kep.tr``."""
        if self.domain == self.provider.domain:
            return None
        return self.domain[: -len(self.provider.domain) - 1]

    @property
    def mersis(self) -> str | None:
        return self.local.split(".", 1)[0] if self.kind is AddressKind.MERSIS else None

    @property
    def uri(self) -> str:
        return f"mailto:{self}"

    @classmethod
    def parse(cls, text: str, directory: ProviderDirectory = BUILTIN_DIRECTORY) -> KepAddress:
        """Parse and validate; raises ``AddressError`` with a reason a person understands."""
        if not isinstance(text, str):
            raise AddressError("an address must be text")
        raw = text.strip()
        if not raw:
            raise AddressError("the address is empty")
        if len(raw) > DEFAULT_LIMITS.address_local_part + 1 + DEFAULT_LIMITS.address_domain:
            raise AddressError("the address is too long")
        if not raw.isascii():
            hint = raw.translate(_TURKISH_HINT)
            suggestion = f" (did you mean {hint!r}?)" if hint.isascii() else ""
            raise AddressError(
                f"{raw!r}: KEP addresses use only ASCII letters; "
                f"write Turkish letters without marks{suggestion}"
            )
        if raw.count("@") != 1:
            raise AddressError(f"{raw!r}: an address has exactly one '@'")
        local, domain = raw.lower().split("@")
        provider = _provider_for(raw, domain, directory)
        kind = _classify_local_part(raw, local)
        return cls(local, domain, provider, kind)

    @classmethod
    def from_uri(cls, uri: str, directory: ProviderDirectory = BUILTIN_DIRECTORY) -> KepAddress:
        """Parse ``mailto:addr`` as used in evidence ``AttributedElectronicAddress``."""
        if uri[:7].lower() == "mailto:":
            uri = uri[7:]
        return cls.parse(uri, directory)


def _provider_for(raw: str, domain: str, directory: ProviderDirectory) -> Provider:
    if len(domain) > DEFAULT_LIMITS.address_domain or not is_valid_domain(domain):
        raise AddressError(f"{raw!r}: {domain!r} is not a valid domain name")
    if not (domain == KEP_ROOT_DOMAIN or domain.endswith("." + KEP_ROOT_DOMAIN)):
        raise AddressError(
            f"{raw!r}: KEP is a closed system; only addresses under .{KEP_ROOT_DOMAIN} "
            "can send or receive"
        )
    provider = directory.owner_of(domain)
    if provider is None:
        raise AddressError(f"{raw!r}: no KEP provider owns the domain {domain!r}")
    return provider


def _classify_local_part(raw: str, local: str) -> AddressKind:
    if not local:
        raise AddressError(f"{raw!r}: the part before '@' is empty")
    if len(local) > DEFAULT_LIMITS.address_local_part:
        raise AddressError(
            f"{raw!r}: the part before '@' is longer than "
            f"{DEFAULT_LIMITS.address_local_part} characters"
        )
    labels = local.split(".")
    for label in labels:
        if not label:
            raise AddressError(f"{raw!r}: dots must separate words (no '..', no dot at the ends)")
        if not _LABEL.match(label):
            raise AddressError(
                f"{raw!r}: {label!r} may hold only letters, digits, '-' and '_' "
                "and must start and end with a letter or digit"
            )
    if local == EVIDENCE_LOCAL_PART:
        return AddressKind.EVIDENCE
    if labels[0].isdigit():
        if len(labels[0]) != MERSIS_DIGITS:
            raise AddressError(
                f"{raw!r}: an address starting with a number must start with a "
                f"{MERSIS_DIGITS}-digit MERSİS number ({labels[0]!r} has {len(labels[0])} digits)"
            )
        if len(labels) > 2:
            raise AddressError(f"{raw!r}: a MERSİS address is 'MERSİSNo' or 'MERSİSNo.serbest'")
        return AddressKind.MERSIS
    for label in labels[1:-1]:
        if label.isdigit():
            raise AddressError(
                f"{raw!r}: a number may only end the name (as in 'ad.soyad.2'), not sit inside it"
            )
    return AddressKind.NAMED
