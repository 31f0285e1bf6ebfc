"""Submitting a development user's signed message, as a provider's own systems would.

Used by ``kep-relay send`` and ``kep-relay mesh traffic``: the message is signed with the
user's dev e-imza certificate and given to a node's submission listener with smtplib.
"""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Sequence

from interop.envelope.smime import build_signed_message
from interop.pki.devpki import DevUser
from relay.config import Listener


def submit(
    listener: Listener,
    user: DevUser,
    recipients: Sequence[str],
    *,
    subject: str,
    body: str,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    extra_headers: Sequence[tuple[str, str]] = (),
) -> tuple[str, int]:
    """Sign as ``user`` and submit; returns (the node's queue id, the message's size).

    Raises ``OSError`` or ``smtplib.SMTPException`` when the node does not take it.
    """
    message = build_signed_message(
        user.signer,
        sender=user.address,
        recipients=list(recipients),
        subject=subject,
        body=body,
        now=dt.datetime.now(dt.UTC),
        attachments=list(attachments),
        extra_headers=list(extra_headers),
    )
    with smtplib.SMTP(listener.host, listener.port, timeout=60) as client:
        client.ehlo()
        code, reply = client.mail(user.address)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, user.address)
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        code, reply = client.data(message)
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
    # "2.0.0 Queued as <id>" (relay/stages/intake.py)
    return reply.decode("ascii", "replace").rsplit(" ", 1)[-1], len(message)
