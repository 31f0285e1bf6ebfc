"""Refusals keep their class, reason and detail across processes (relay/crypto.py workers)."""

from __future__ import annotations

import pickle

import pytest

from interop.errors import (
    AddressError,
    CmsFormatError,
    ConfigurationError,
    EnvelopeFormatError,
    EvidenceFormatError,
    KepError,
    LimitExceeded,
)
from interop.reasons import Reason


@pytest.mark.parametrize(
    "error",
    [
        KepError("storage trouble"),
        AddressError("not a KEP address"),
        CmsFormatError("broken DER", reason=Reason.InvalidUserSignature),
        EvidenceFormatError("a DTD"),
        EnvelopeFormatError("no delil.xml"),
        LimitExceeded("too big"),
        ConfigurationError("no key"),
    ],
)
def test_a_refusal_pickles_with_its_reason(error: KepError) -> None:
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 (bytes made just above)
    assert type(again) is type(error)
    assert (again.reason, again.detail, str(again)) == (error.reason, error.detail, str(error))
    assert again.smtp_reply == error.smtp_reply
