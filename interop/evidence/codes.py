"""Evidence types, events and the KEP evidence codes (INTEROP-PROFILE.md §5, KEP-DOMAIN.md)."""

from __future__ import annotations

import enum

REM_NS = "http://uri.etsi.org/02640/v2#"
KEP_NS = "urn:kep:interop:1"  # profile choice: namespace of the KEP extensions (§5)
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
# The standard writes the scheme without "//"; we write that and accept both (§5).
EVENT_URI_PREFIX = "http:uri.etsi.org/02640/Event#"
_EVENT_URI_PREFIXES_ACCEPTED = (EVENT_URI_PREFIX, "http://uri.etsi.org/02640/Event#")
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"


class EvidenceType(enum.Enum):
    SubmissionAcceptanceRejection = "SubmissionAcceptanceRejection"
    RelayREMMDAcceptanceRejection = "RelayREMMDAcceptanceRejection"
    RelayREMMDFailure = "RelayREMMDFailure"
    DeliveryNonDeliveryToRecipient = "DeliveryNonDeliveryToRecipient"
    RetrievalNonRetrievalByRecipient = "RetrievalNonRetrievalByRecipient"
    DownloadNonDownloadByRecipient = "DownloadNonDownloadByRecipient"
    AcceptanceRejectionByRecipient = "AcceptanceRejectionByRecipient"
    RelayToNonREMSystem = "RelayToNonREMSystem"
    ReceivedFromNonREMSystem = "ReceivedFromNonREMSystem"

    @classmethod
    def from_element_name(cls, name: str) -> EvidenceType:
        """Root element name to type, accepting the variants deployed providers emit (§5)."""
        name = _ROOT_ALIASES.get(name, name)
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"{name!r} is not an ETSI REM evidence element") from None


# Older (v1) names still emitted by deployed providers; accepted on input only (§5).
_ROOT_ALIASES = {
    "REMMDAcceptanceRejection": "SubmissionAcceptanceRejection",
    "RelayToREMMDAcceptanceRejection": "RelayREMMDAcceptanceRejection",
    "RelayToREMMDFailure": "RelayREMMDFailure",
}


class Event(enum.Enum):
    Acceptance = "Acceptance"
    Rejection = "Rejection"
    Delivery = "Delivery"
    NonDelivery = "NonDelivery"
    Retrieval = "Retrieval"
    NonRetrieval = "NonRetrieval"
    DeliveryExpiration = "DeliveryExpiration"
    Download = "Download"
    NonDownload = "NonDownload"

    @property
    def uri(self) -> str:
        return EVENT_URI_PREFIX + self.value

    @classmethod
    def from_uri(cls, uri: str) -> Event:
        for prefix in _EVENT_URI_PREFIXES_ACCEPTED:
            if uri.startswith(prefix):
                try:
                    return cls(uri[len(prefix) :])
                except ValueError:
                    break
        raise ValueError(f"unknown event code {uri!r}")

    @property
    def is_negative(self) -> bool:
        return self in NEGATIVE_EVENTS


NEGATIVE_EVENTS = frozenset(
    {
        Event.Rejection,
        Event.NonDelivery,
        Event.NonRetrieval,
        Event.DeliveryExpiration,
        Event.NonDownload,
    }
)

EVENTS_OF_TYPE: dict[EvidenceType, frozenset[Event]] = {
    EvidenceType.SubmissionAcceptanceRejection: frozenset({Event.Acceptance, Event.Rejection}),
    EvidenceType.RelayREMMDAcceptanceRejection: frozenset({Event.Acceptance, Event.Rejection}),
    EvidenceType.RelayREMMDFailure: frozenset({Event.DeliveryExpiration}),
    EvidenceType.DeliveryNonDeliveryToRecipient: frozenset({Event.Delivery, Event.NonDelivery}),
    EvidenceType.RetrievalNonRetrievalByRecipient: frozenset({Event.Retrieval, Event.NonRetrieval}),
    EvidenceType.DownloadNonDownloadByRecipient: frozenset({Event.Download, Event.NonDownload}),
    EvidenceType.AcceptanceRejectionByRecipient: frozenset({Event.Acceptance, Event.Rejection}),
    EvidenceType.RelayToNonREMSystem: frozenset({Event.Acceptance, Event.Rejection}),
    EvidenceType.ReceivedFromNonREMSystem: frozenset({Event.Acceptance, Event.Rejection}),
}

# Evidence issued one per recipient carries EvidenceRefersToRecipient (§5).
PER_RECIPIENT_TYPES = frozenset(
    {
        EvidenceType.RelayREMMDAcceptanceRejection,
        EvidenceType.DeliveryNonDeliveryToRecipient,
        EvidenceType.RetrievalNonRetrievalByRecipient,
    }
)

# KEP-DOMAIN.md "Evidence steps": the code PTT's API gives each (type, event); DelilTuru (§5).
DELIL_TURU: dict[tuple[EvidenceType, Event], int] = {
    (EvidenceType.SubmissionAcceptanceRejection, Event.Acceptance): 10,
    (EvidenceType.SubmissionAcceptanceRejection, Event.Rejection): 11,
    (EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance): 20,
    (EvidenceType.RelayREMMDAcceptanceRejection, Event.Rejection): 21,
    (EvidenceType.RelayREMMDFailure, Event.DeliveryExpiration): 31,
    (EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery): 40,
    (EvidenceType.DeliveryNonDeliveryToRecipient, Event.NonDelivery): 41,
    (EvidenceType.RetrievalNonRetrievalByRecipient, Event.Retrieval): 60,
}
