"""The trust list (INTEROP-PROFILE.md §1): per provider, who may sign and who may connect.

A ``TrustList`` is a value built from configuration (or the dev PKI). It never fetches anything:
CRLs come in separately as ``interop.revocation.RevocationData``. It says where each CA's CRLs
are published (``crl_locations``: a provider's for its process and TLS CAs, the list's own for
the user and TSA roots); the gateway fetches them (``relay.crls``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography import x509

from interop.errors import ConfigurationError
from interop.limits import DEFAULT_LIMITS
from interop.providers import BUILTIN_DIRECTORY, Provider, ProviderDirectory


@dataclass(frozen=True, slots=True)
class ProviderTrust:
    """What a gateway trusts about one provider (its own entry included)."""

    provider: Provider
    process_cas: tuple[x509.Certificate, ...]
    tls_cas: tuple[x509.Certificate, ...]
    tls_names: tuple[str, ...]
    # §1 profile choice: the process certificate's dNSName is the provider's domain.
    process_san: str = ""
    message_limit: int = DEFAULT_LIMITS.cross_provider_message
    crl_locations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.process_cas:
            raise ConfigurationError(f"trust list: provider {self.provider.id} has no process CA")
        if not self.tls_cas:
            raise ConfigurationError(f"trust list: provider {self.provider.id} has no TLS CA")
        if not self.tls_names:
            raise ConfigurationError(f"trust list: provider {self.provider.id} has no TLS names")
        if not self.process_san:
            object.__setattr__(self, "process_san", self.provider.domain)
        if self.message_limit <= 0:
            raise ConfigurationError(f"trust list: provider {self.provider.id}: size limit <= 0")

    @property
    def id(self) -> str:
        return self.provider.id


@dataclass(frozen=True, slots=True)
class TrustList:
    providers: tuple[ProviderTrust, ...]
    # ESHS roots for users' e-imza certificates (§1 "User certificates").
    user_cas: tuple[x509.Certificate, ...]
    # Roots for RFC 3161 time-stamping authorities.
    tsa_cas: tuple[x509.Certificate, ...] = ()
    # Where the CRLs of user_cas and tsa_cas are published (URLs).
    crl_locations: tuple[str, ...] = ()
    _by_id: dict[str, ProviderTrust] = field(init=False, repr=False, compare=False)
    _own: ProviderDirectory = field(init=False, repr=False, compare=False)
    _directory: ProviderDirectory = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, ProviderTrust] = {}
        for entry in self.providers:
            if entry.id in by_id:
                raise ConfigurationError(f"trust list: provider {entry.id} is listed twice")
            by_id[entry.id] = entry
        object.__setattr__(self, "_by_id", by_id)
        # Built once: refuses overlapping domains and answers owner_of on the hot path.
        object.__setattr__(
            self, "_own", ProviderDirectory(tuple(p.provider for p in self.providers))
        )
        object.__setattr__(
            self,
            "_directory",
            BUILTIN_DIRECTORY.with_providers(p.provider for p in self.providers),
        )

    def get(self, provider_id: str) -> ProviderTrust | None:
        return self._by_id.get(provider_id)

    def __getitem__(self, provider_id: str) -> ProviderTrust:
        entry = self._by_id.get(provider_id)
        if entry is None:
            raise KeyError(f"provider {provider_id!r} is not in the trust list")
        return entry

    def __iter__(self) -> Iterator[ProviderTrust]:
        return iter(self.providers)

    @property
    def directory(self) -> ProviderDirectory:
        """Builtin providers plus those of this list (the list's entries win)."""
        return self._directory

    def owner_of(self, domain: str) -> ProviderTrust | None:
        provider = self._own.owner_of(domain)
        return None if provider is None else self._by_id[provider.id]

    @classmethod
    def build(
        cls,
        providers: Iterable[ProviderTrust],
        user_cas: Iterable[x509.Certificate],
        tsa_cas: Iterable[x509.Certificate] = (),
        crl_locations: Iterable[str] = (),
    ) -> TrustList:
        return cls(tuple(providers), tuple(user_cas), tuple(tsa_cas), tuple(crl_locations))
