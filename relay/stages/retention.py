"""Retention: the gateway's own copies of messages go once every obligation on them is met
(INTEROP-PROFILE.md §7, "Content is not kept").

Takes: rows whose obligations are met: a submission processed or refused (its evidence filed,
its Dispatches written, its local recipients served), a Dispatch or an Evidence message from a
peer processed (delivered and evidenced, or filed in Delil), a Dispatch or an Evidence message
to a peer that the peer accepted or that was given up, and any message an operator ended
(``deleted``). Promises: their spool files (a small message's bytes, or an Evidence message's,
held in the store) are removed, ``[retention] keep_content_days`` after that moment (default 0:
at once), and what the store's files held of them is made unreadable (``Store.purge_removed``:
at the first sweep no other node process is in the way of); what remains is the evidence,
with the SHA-256 of the original, and the users' mailboxes. Messages held for an operator
(invalid, unmatched, quarantined, hold) are kept. On failure: nothing is lost; a file not
removed (a crash between "met" and "removed", a busy disk) goes at the next sweep, which also
runs at start-up. An Evidence message needed again for a resend is made again from its evidence
(``relay.issuing.remake_message``).
"""

from __future__ import annotations

import structlog

from relay.context import NodeContext

log = structlog.get_logger("kep.retention")

DAY = 86400.0


def sweep(context: NodeContext) -> int:
    """Remove the spool files whose time has come; returns how many."""
    keep = context.config.retention.keep_content_days * DAY
    removed = 0
    while ids := context.store.content_done(context.now() - keep):
        for queue_id in ids:
            context.spool.remove(queue_id)  # first the file: a crash here sweeps it again
        context.store.content_removed(ids)
        removed += len(ids)
    context.store.purge_removed()
    if removed:
        log.info("content_removed", count=removed)
    return removed
