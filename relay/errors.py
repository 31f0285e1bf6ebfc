"""The error tree of ``relay``, and the one place that turns any failure into an SMTP reply.

::

    RelayError                   anything the relay refuses or defers; knows its SMTP reply
    ├── TemporaryTrouble         may pass later: the peer retries (4xx)
    │   ├── StorageTrouble       spool, Maildir or store could not be written  451 4.3.0
    │   ├── LocalTrouble         anything else that went wrong here            451 4.3.0
    │   ├── RouteTrouble         DNS or a peer could not be reached now        451 4.4.3
    │   └── SessionCut           the server ends a session                      421 4.4.2
    │       ├── SlowTransfer     DATA below the floor rate for too long
    │       ├── Silence          no data inside DATA for too long
    │       └── JunkCommands     too many commands that do no work
    └── Refusal                  will not pass: the peer must not retry (5xx)
        ├── NotPermitted         a sender or recipient this peer may not use   550 5.7.1
        ├── BadSender            a sender address of the right domain, badly written  553 5.1.7
        ├── BadRecipient         a recipient address, badly written             553 5.1.3
        ├── TooBig               over the size limit of §2                      552 5.3.4
        └── UnreadableMessage    the message is not a well-formed envelope      550 5.6.0

``interop``'s ``KepError`` carries its own reply (``KepError.smtp_reply``); ``reply_for`` is
the only function that decides the reply for an exception, so a temporary problem is never a
5xx (INTEROP-PROFILE.md §2: a peer gives up on 5xx, and a lost 5xx is a lost legal message) and
an exception nobody foresaw is ``451 4.3.0``, never aiosmtpd's bare ``500``. Reply texts are
short and say nothing of paths, errno or exception classes: those go to the log.

``is_environmental`` tells trouble that lies around a message (a full disk, a busy database)
from trouble in it, so processing retries the first without counting it against the message.
"""

from __future__ import annotations

import errno

from interop.errors import KepError, SmtpReply
from interop.reasons import Reason
from relay.store.database import is_database_error, is_database_trouble

# errno values that describe the machine, not the message: they pass when an operator acts.
_ENVIRONMENTAL_ERRNO = frozenset(
    {
        errno.ENOSPC,  # disk full
        errno.EDQUOT,  # quota of the node's user
        errno.EFBIG,  # the process's file-size limit (RLIMIT_FSIZE)
        errno.EIO,  # a failing device
        errno.EROFS,  # remounted read-only after an error
        errno.EACCES,  # permissions changed under the node
        errno.EPERM,  # an immutable folder
        errno.EMFILE,  # out of file descriptors
        errno.ENFILE,
        errno.ENOMEM,
        errno.EAGAIN,
        errno.EINTR,
    }
)


class RelayError(Exception):
    """Base of the tree: ``reply`` is what a peer hears; ``detail`` goes only to the log."""

    code: int = 451
    enhanced: str = "4.3.0"
    text: str = "Temporary local problem, try again later"
    reason: Reason = Reason.TechnicalMalfunction

    def __init__(self, detail: str = "", *, text: str | None = None) -> None:
        super().__init__(detail or self.text)
        self.detail = detail or self.text
        if text is not None:
            self.text = text

    @property
    def temporary(self) -> bool:
        return self.code < 500

    @property
    def reply(self) -> SmtpReply:
        return SmtpReply(self.code, self.enhanced, self.text)


class TemporaryTrouble(RelayError):
    pass


class StorageTrouble(TemporaryTrouble):
    text = "Temporary storage problem, try again later"


class LocalTrouble(TemporaryTrouble):
    pass


class RouteTrouble(TemporaryTrouble):
    # RFC 3463 4.4.3: directory server failure (DNS); the sender tries again later.
    enhanced = "4.4.3"
    text = "The route to the peer cannot be found now, try again later"


class SessionCut(TemporaryTrouble):
    # RFC 3463 4.4.2: bad connection. 421: the server closes the session (RFC 5321 §4.2.2).
    code = 421
    enhanced = "4.4.2"
    text = "Closing the session, try again later"
    why = "cut"  # the label of kep_smtp_sessions_cut_total


class SlowTransfer(SessionCut):
    text = "Transfer too slow, closing"
    why = "slow_transfer"


class Silence(SessionCut):
    text = "Timeout waiting for data, closing"
    why = "silence"


class JunkCommands(SessionCut):
    text = "Too many commands that do no work, closing"
    why = "junk"


class Refusal(RelayError):
    code = 550
    enhanced = "5.6.0"
    text = "Refused"
    reason = Reason.InvalidMessageFormat


class NotPermitted(Refusal):
    # INTEROP-PROFILE.md §2: a peer speaking for another provider, or relaying (550 5.7.1).
    enhanced = "5.7.1"
    reason = Reason.PolicyViolation


class BadSender(Refusal):
    code = 553
    enhanced = "5.1.7"  # RFC 3463: bad sender's mailbox address syntax


class BadRecipient(Refusal):
    code = 553
    enhanced = "5.1.3"  # RFC 3463: bad destination mailbox address syntax


class TooBig(Refusal):
    code = 552
    enhanced = "5.3.4"  # RFC 3463: message too big for system; INTEROP-PROFILE.md §2
    reason = Reason.PolicyViolation


class UnreadableMessage(Refusal):
    pass


def as_relay_error(exc: BaseException) -> RelayError:
    """The tree's member for any exception (``interop``'s errors keep their own reply)."""
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, KepError):
        reply = exc.smtp_reply
        error: RelayError = (
            Refusal(exc.detail, text=exc.detail)
            if reply.code >= 500
            else LocalTrouble(exc.detail, text=exc.detail)
        )
        error.code, error.enhanced, error.reason = reply.code, reply.enhanced, exc.reason
        return error
    if isinstance(exc, OSError) or is_database_error(exc):
        return StorageTrouble(_describe(exc))
    return LocalTrouble(_describe(exc))


def reply_for(exc: BaseException) -> SmtpReply:
    """The SMTP reply for a failure during a transaction: the one place that decides it."""
    return as_relay_error(exc).reply


def is_environmental(exc: BaseException) -> bool:
    """Trouble of the machine (disk, database busy or locked), not of the message itself."""
    if isinstance(exc, TemporaryTrouble):
        return True
    if isinstance(exc, KepError):
        return not exc.permanent and exc.reason is Reason.TechnicalMalfunction
    if is_database_trouble(exc):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _ENVIRONMENTAL_ERRNO
    return False


def _describe(exc: BaseException) -> str:
    """For the log: class and message (with errno and path, which a peer never sees)."""
    return f"{type(exc).__name__}: {exc}"
