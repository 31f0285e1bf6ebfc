"""Counting TLS handshakes that fail, which asyncio otherwise drops without a word.

A peer whose client certificate expired, or that speaks an old TLS version, never reaches the
SMTP protocol: asyncio closes the connection and tells nobody. ``SSLContext.sslobject_class``
(the documented way to customise ``wrap_bio``, which asyncio's TLS uses) is set to a subclass
of ``ssl.SSLObject`` that reports each handshake's failure with a bounded reason. Successful
handshakes are counted where the certificate is mapped to a provider (``relay.node``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

Report = Callable[[str], None]  # called with a client-certificate result label


def failure_label(exc: ssl.SSLError) -> str:
    """``missing``, ``untrusted`` or ``failed`` (version, cipher or protocol trouble)."""
    reason = (exc.reason or "").upper()
    if "NO_CERTIFICATE" in reason or "DID_NOT_RETURN_A_CERTIFICATE" in reason:
        return "missing"
    if (
        "CERTIFICATE" in reason
        or "UNKNOWN_CA" in reason
        or isinstance(exc, ssl.SSLCertVerificationError)
    ):
        return "untrusted"
    return "failed"


def count_failures(context: ssl.SSLContext, report: Report) -> ssl.SSLContext:
    """Make every TLS object of ``context`` report a failed handshake to ``report``."""

    class CountingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # the handshake is still going on
            except ssl.SSLError as exc:
                report(failure_label(exc))
                raise

    context.sslobject_class = CountingSSLObject
    return context
