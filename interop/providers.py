"""Which KEP provider owns a domain (KEP-DOMAIN.md "Who is who", INTEROP-PROFILE.md §1)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from interop.errors import ConfigurationError

KEP_ROOT_DOMAIN = "kep.tr"
_PROVIDER_ID = re.compile(r"^[a-z][a-z0-9]{1,15}$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# The eight providers licensed by BTK, with their display names (KEP-DOMAIN.md).
BUILTIN_PROVIDERS: Mapping[str, str] = {
    "hs01": "PTT",
    "hs02": "TNB",
    "hs03": "TÜRKKEP",
    "hs04": "İNTERKEP",
    "hs05": "EFİNANSKEP",
    "hs06": "KEPKUR",
    "hs07": "FITKEP",
    "hs08": "MİKROKEP",
}

# eTebligat is sent only through PTT (KEP-DOMAIN.md "Kinds of message").
ETEBLIGAT_PROVIDER = "hs01"


def provider_id_problem(provider_id: str) -> str | None:
    """What is wrong with ``provider_id`` as a provider id, giving the valid form when there is
    one (``'HS01'``: lower case, ``'hs01'``); None when it is a valid id."""
    if _PROVIDER_ID.match(provider_id):
        return None
    lower = provider_id.strip().lower()
    if _PROVIDER_ID.match(lower):
        return f"{provider_id!r} is not a provider id: write it in lower case, {lower!r}"
    return (
        f"{provider_id!r} is not a provider id: 2 to 16 lower-case letters and digits,"
        " beginning with a letter (like 'hs01')"
    )


def is_valid_domain(domain: str) -> bool:
    labels = domain.split(".")
    return len(domain) <= 255 and len(labels) >= 2 and all(_DOMAIN_LABEL.match(x) for x in labels)


@dataclass(frozen=True, slots=True)
class Provider:
    """A KEP provider: id (``hs02``), its KEP domain (``hs02.kep.tr``) and a display name."""

    id: str
    domain: str
    name: str = ""

    def __post_init__(self) -> None:
        if not _PROVIDER_ID.match(self.id):
            raise ConfigurationError(f"provider id {self.id!r}: lower-case letters and digits")
        if not is_valid_domain(self.domain) or not self.domain.endswith("." + KEP_ROOT_DOMAIN):
            raise ConfigurationError(
                f"provider {self.id}: domain {self.domain!r} "
                f"is not a domain under {KEP_ROOT_DOMAIN}"
            )

    @property
    def evidence_address(self) -> str:
        """``delil@<domain>``, the reserved evidence address (INTEROP-PROFILE.md §3)."""
        return f"delil@{self.domain}"

    def owns(self, domain: str) -> bool:
        """A provider owns its domain and every subdomain of it (§1)."""
        return domain == self.domain or domain.endswith("." + self.domain)


@dataclass(frozen=True, slots=True)
class ProviderDirectory:
    """Maps domains to providers. ``builtin()`` holds hs01–hs08; more come by configuration."""

    providers: tuple[Provider, ...]
    _by_id: dict[str, Provider] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, Provider] = {}
        domains: dict[str, str] = {}
        for provider in self.providers:
            if provider.id in by_id:
                raise ConfigurationError(f"provider {provider.id} is listed twice")
            for other_domain, other_id in domains.items():
                if provider.owns(other_domain) or Provider(other_id, other_domain).owns(
                    provider.domain
                ):
                    raise ConfigurationError(
                        f"providers {other_id} and {provider.id} claim overlapping domains"
                    )
            by_id[provider.id] = provider
            domains[provider.domain] = provider.id
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def builtin(cls) -> ProviderDirectory:
        return cls(
            tuple(
                Provider(pid, f"{pid}.{KEP_ROOT_DOMAIN}", name)
                for pid, name in BUILTIN_PROVIDERS.items()
            )
        )

    def with_providers(self, extra: Iterable[Provider]) -> ProviderDirectory:
        """A directory with ``extra`` added; a provider with a known id replaces the old entry."""
        merged = {p.id: p for p in self.providers}
        merged.update({p.id: p for p in extra})
        return ProviderDirectory(tuple(merged.values()))

    def get(self, provider_id: str) -> Provider | None:
        return self._by_id.get(provider_id)

    def __getitem__(self, provider_id: str) -> Provider:
        try:
            return self._by_id[provider_id]
        except KeyError:
            raise KeyError(f"unknown provider {provider_id!r}") from None

    def owner_of(self, domain: str) -> Provider | None:
        """The provider owning ``domain`` (exactly or as a subdomain), or None."""
        domain = domain.lower().rstrip(".")
        for provider in self.providers:
            if provider.owns(domain):
                return provider
        return None

    def __iter__(self) -> Iterator[Provider]:
        return iter(self.providers)


BUILTIN_DIRECTORY = ProviderDirectory.builtin()
