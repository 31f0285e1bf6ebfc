"""Issuing Evidence messages (relay/issuing.py): written durably, the directory once."""

from __future__ import annotations

from pathlib import Path

import pytest

from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.pki.devpki import DevPki
from interop.providers import BUILTIN_DIRECTORY
from relay import spool
from relay.config_file import from_mapping
from relay.context import build_context
from relay.issuing import write_messages
from relay.keys import write_pki
from tests.helpers import NOW, make_dispatch


def test_a_dispatchs_evidence_messages_are_in_place_before_one_directory_sync(
    pki: DevPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    context = build_context(config)
    about = make_dispatch(pki).submission
    evidence = [
        follow_up(about, BUILTIN_DIRECTORY["hs02"], kind, event, NOW, recipient=1)
        for kind, event in (
            (EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance),
            (EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery),
        )
    ]
    synced: list[tuple[Path, set[str]]] = []
    real_fsync_dir = spool.fsync_dir

    def recording_fsync_dir(path: Path) -> None:
        synced.append((path, {p.name for p in path.iterdir()}))
        real_fsync_dir(path)

    monkeypatch.setattr(spool, "fsync_dir", recording_fsync_dir)
    outgoing = write_messages(context, evidence, "hs01", dispatch_message_id="<d@hs01.kep.tr>")

    names = {context.spool.path(o.queue_id).name for o in outgoing}
    assert len(names) == 2
    # One sync of the spool directory, made when both files were already renamed into it.
    assert synced == [(context.spool.msg_dir, names)]
    for message in outgoing:
        data = context.spool.path(message.queue_id).read_bytes()
        assert len(data) == message.size
    assert not list(context.spool.tmp_dir.iterdir())
    context.store.close()
