"""The error tree of ``interop``.

::

    KepError                        anything this library refuses; knows its SMTP reply
    ├── MalformedInput              bytes that are not what they claim to be (permanent)
    │   ├── AddressError            not a KEP address, or not a well-formed one
    │   ├── IdentityNumberError     not a valid TC Kimlik No or YKN
    │   ├── CmsFormatError          DER that is not a CMS SignedData we can read
    │   ├── EvidenceFormatError     evidence XML: unsafe, not well-formed, or missing content
    │   └── EnvelopeFormatError     MIME structure or header fields of §3 not as required
    ├── LimitExceeded               a named limit of ``interop.limits`` was crossed (552 5.3.4)
    └── ConfigurationError          trust list or key material unusable (not the peer's fault)

Verification outcomes (bad signature, untrusted or revoked certificate, digest mismatch) are not
errors: verifiers return result values carrying a ``Reason``. Exceptions are for input that cannot
be read at all. Third-party exceptions (asn1crypto, lxml, cryptography) are translated into this
tree where they are caught, with ``raise ... from exc``: each parser of outside bytes has one
such boundary (``translated``), so nothing else leaves it, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from interop.reasons import Reason


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """An SMTP reply: basic code, enhanced status code (RFC 3463) and text."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @classmethod
    def parse(cls, line: str) -> SmtpReply:
        """A reply as it went on the wire (``0`` for a code that is not one, ``""`` for no
        enhanced status code): the SMTP library writes some replies itself as text."""
        code, _, rest = line.strip().partition(" ")
        enhanced, _, text = rest.partition(" ")
        if not (enhanced[:1] in ("2", "4", "5") and enhanced.count(".") == 2):
            enhanced, text = "", rest
        return cls(int(code) if code.isdigit() and len(code) == 3 else 0, enhanced, text)


class KepError(Exception):
    """Base of every refusal; ``detail`` is safe to show to a peer.

    ``permanent`` decides basic and enhanced code together, so a 4xx never carries a 5.x.x status
    (and the reverse). Unknown trouble is temporary: a peer will retry rather than lose a message.
    """

    reason: Reason = Reason.TechnicalMalfunction
    permanent: bool = False
    smtp_code_permanent: tuple[int, str] = (550, "5.6.0")
    smtp_code_temporary: tuple[int, str] = (451, "4.3.0")

    def __init__(self, detail: str, *, reason: Reason | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason

    @property
    def smtp_reply(self) -> SmtpReply:
        code, enhanced = self.smtp_code_permanent if self.permanent else self.smtp_code_temporary
        return SmtpReply(code, enhanced, self.detail)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled with its reason (callers may run verification in another process).
        return (_rebuild, (type(self), self.detail, self.reason))


class MalformedInput(KepError):
    reason = Reason.InvalidMessageFormat
    permanent = True


class AddressError(MalformedInput):
    # RFC 3463 5.1.3: bad destination mailbox address syntax.
    smtp_code_permanent = (553, "5.1.3")


class IdentityNumberError(MalformedInput):
    reason = Reason.InvalidUserSignature  # a signer who names no valid number speaks for no one


class CmsFormatError(MalformedInput):
    pass


class EvidenceFormatError(MalformedInput):
    pass


class EnvelopeFormatError(MalformedInput):
    pass


class LimitExceeded(KepError):
    reason = Reason.PolicyViolation
    permanent = True
    # RFC 3463 5.3.4: message too big for system; INTEROP-PROFILE.md §2.
    smtp_code_permanent = (552, "5.3.4")


class ConfigurationError(KepError):
    """Raised at start-up or when loading key material; never a peer's fault."""


# Characters of a library's message kept in a detail (a peer may see it; some quote the input).
_CAUSE_TEXT = 200


@contextmanager
def translated(error: type[KepError], what: str) -> Iterator[None]:
    """The boundary of a parser: any exception inside becomes ``error`` (``raise ... from``).

    asn1crypto, cryptography, lxml and the ``email`` package parse lazily and raise whatever
    their code meets (ValueError, KeyError, UnicodeDecodeError, RecursionError, ...), often far
    from the call that handed them the bytes, so the boundary is the parser's whole body, not a
    list of exception types. Our own refusals pass unchanged; so does ``MemoryError``, which is
    this process's trouble, not the input's, and must stay a temporary failure.
    """
    try:
        yield
    except (KepError, MemoryError):
        raise
    except Exception as exc:
        raise error(f"{what}: {cause_text(exc)}") from exc


def cause_text(exc: BaseException) -> str:
    """A library exception as one short line for a detail."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _CAUSE_TEXT else text[: _CAUSE_TEXT - 3] + "..."


def _rebuild(cls: type[KepError], detail: str, reason: Reason) -> KepError:
    return cls(detail, reason=reason)
