"""Event reasons of INTEROP-PROFILE.md §6 (the TS 102 640-2 annex list, spelling kept)."""

from __future__ import annotations

import enum

REASON_URI_PREFIX = "http:uri.etsi.org/REM/EventReason#"
# Deployed providers sometimes write the scheme with slashes; accepted on input only (§5).
_REASON_URI_PREFIXES_ACCEPTED = (REASON_URI_PREFIX, "http://uri.etsi.org/REM/EventReason#")


class Reason(enum.Enum):
    """A reason code and its ETSI name; the value is the numeric code of the annex."""

    InvalidMessageFormat = 1
    MalwareFound = 2
    InvalidUserSignature = 3
    UserCertExpiredOrRevoked = 4
    PolicyViolation = 5
    R_REMMD_Malfunction = 6
    R_REMMD_NotIdenified = 7  # sic: the standard's spelling is the wire value
    R_REMMD_Unreachable = 8
    S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD = 9
    UnknownRecipient = 10
    MailboxFull = 11
    TechnicalMalfunction = 12
    AttachementFormatNotAccepted = 13  # sic
    RecipientRejection = 14
    RetentionPeriodExpired = 15
    Other = 22

    @property
    def code(self) -> int:
        return self.value

    @property
    def uri(self) -> str:
        return REASON_URI_PREFIX + self.name

    @classmethod
    def from_uri(cls, uri: str) -> Reason:
        """Parse an EventReason ``Code``; raises ``ValueError`` for anything not in §6."""
        for prefix in _REASON_URI_PREFIXES_ACCEPTED:
            if uri.startswith(prefix):
                name = uri[len(prefix) :]
                if name in cls.__members__:
                    return cls[name]
        raise ValueError(f"unknown event reason {uri!r}")
