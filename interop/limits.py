"""Every limit ``interop`` enforces, with where its number comes from.

Callers may pass a different ``Limits`` (from configuration); nothing here grows without bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    # INTEROP-PROFILE.md §2: cross-provider limit on the original message.
    cross_provider_message: int = 25 * MiB
    # INTEROP-PROFILE.md §2 / KEP-DOMAIN.md: hs01 to hs01 (the provider's own limit).
    same_provider_message: int = 100 * MiB
    # INTEROP-PROFILE.md §2: SMTP SIZE = limit + this allowance for the envelope around it.
    envelope_allowance: int = 1 * MiB
    # RFC 5322 §2.1.1 caps lines at 998 octets; we allow one header field (with folding) this much.
    header_field: int = 16 * 1024
    # All header fields of one MIME entity together; real messages stay far below.
    header_block: int = 256 * 1024
    # Header fields in one entity (Postfix's header_field_limit is 2048; KEP headers are few).
    header_fields: int = 1000
    # A Content-Type that is not a plain ``type/sub; name=value`` goes to the standard library's
    # full parser, which costs ~2.5 µs a byte and rescans the rest of the value for each comment
    # or quoted string (16 KiB of "(a)" took 0.5 s; one per part of a Dispatch, 30 s). So it
    # reads at most this much: an RFC 2231 file name of 255 Turkish letters percent-encoded in
    # continuations is ~2-3 KB, and gateways write far less.
    content_type_bytes: int = 4 * 1024
    # Parameters, quoted strings and comments of that Content-Type (counted by their ';', '"'
    # and '(' before the full parser runs): gateways write 1-4 parameters; a long file name in
    # quoted RFC 2231 continuations of ~75 characters is ~40 parameters and 40 quoted strings.
    # RFC 2231 §3 sets no limit on continuations; 1,700 of them in one part cost 48 ms.
    content_type_params: int = 128
    # RFC 5322 local part of a KEP address is at most 64 octets (RFC 5321 §4.5.3.1.1).
    address_local_part: int = 64
    # RFC 5321 §4.5.3.1.2: domain at most 255 octets.
    address_domain: int = 255
    # A delil.xml evidence is a few KiB; this bounds a hostile one before the parser sees it.
    evidence_xml: int = 1 * MiB
    # A smime.p7s with chain and time-stamp token is a few KiB.
    signature_part: int = 1 * MiB
    # Recipients of one Dispatch (RFC 5321 §4.5.3.1.8 requires accepting at least 100).
    recipients: int = 1000
    # Parts of one multipart entity.
    mime_parts: int = 64
    # Certificates accepted in one CMS SignedData or XML signature.
    certificates_per_signature: int = 16
    # Chain depth for path validation (intermediates + root).
    chain_depth: int = 6
    # Signature time-stamps on one CMS or XML signature (CAdES-T / XAdES-T allow several; a
    # signer adds one, rarely one per TSA). Each costs a signature check and a path validation.
    timestamps_per_signature: int = 4

    def smtp_size(self, message_limit: int) -> int:
        """The SIZE value to advertise for a message limit (§2)."""
        return message_limit + self.envelope_allowance


DEFAULT_LIMITS = Limits()


def message_limit(
    sender_provider: str,
    recipient_providers: Iterable[str],
    own_limits: Mapping[str, int],
    limits: Limits = DEFAULT_LIMITS,
    peer_limits: Mapping[str, int] | None = None,
) -> int:
    """The size limit on an original message (INTEROP-PROFILE.md §2, KEP-DOMAIN.md "Size").

    Cross-provider messages may be 25 MiB; a message whose every recipient is at the sender's
    own provider may be that provider's own limit (``own_limits``; hs01 allows 100 MiB).
    One recipient elsewhere makes the whole message cross-provider, limited by what each
    recipient's provider takes (``peer_limits``, the trust list's limit for that provider: the
    same one its gateway is held to when it sends to us; 25 MiB unless configured).
    """
    recipients = set(recipient_providers)
    if recipients and recipients == {sender_provider}:
        return own_limits.get(sender_provider, limits.cross_provider_message)
    others = recipients - {sender_provider}
    return min(
        ((peer_limits or {}).get(p, limits.cross_provider_message) for p in others),
        default=limits.cross_provider_message,
    )


# Providers' own same-provider limits known from KEP-DOMAIN.md; others come by configuration.
KNOWN_OWN_LIMITS: Mapping[str, int] = {"hs01": DEFAULT_LIMITS.same_provider_message}

# Bytes read from a stream at a time when hashing or scanning (not a protocol limit).
STREAM_CHUNK = 1 * MiB
