"""CRLs made for a test: issued when the test says, revoking what it says, when it says."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from interop.pki.devpki import DevCa


def make_crl(
    ca: DevCa,
    this_update: dt.datetime,
    next_update: dt.datetime,
    revoked: Sequence[tuple[x509.Certificate, dt.datetime]] = (),
    *,
    number: int = 2,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.CertificateRevocationList:
    """A CRL signed with ``ca``'s key; ``revoked`` pairs a certificate with its revocationDate."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    for cert, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(when)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return builder.sign(ca.signer.key, hashes.SHA256())
