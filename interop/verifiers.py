"""One ``CertificateValidator`` per role and provider, built from the trust list once."""

from __future__ import annotations

from interop.pathval import CertificateValidator, Role
from interop.revocation import RevocationData
from interop.trust import ProviderTrust, TrustList


class Verifiers:
    """The validators a gateway needs; replace the object when trust or CRLs change."""

    def __init__(self, trust: TrustList, revocation: RevocationData) -> None:
        self.trust = trust
        self.revocation = revocation
        self._process = {
            p.id: CertificateValidator(p.process_cas, revocation, Role.PROCESS) for p in trust
        }
        self._tls = {p.id: CertificateValidator(p.tls_cas, revocation, Role.TLS) for p in trust}
        self.user = CertificateValidator(trust.user_cas, revocation, Role.USER)
        self.tsa = (
            CertificateValidator(trust.tsa_cas, revocation, Role.TSA) if trust.tsa_cas else None
        )

    def provider(self, provider_id: str) -> ProviderTrust:
        return self.trust[provider_id]

    def process(self, provider_id: str) -> CertificateValidator:
        return self._process[provider_id]

    def tls(self, provider_id: str) -> CertificateValidator:
        return self._tls[provider_id]
