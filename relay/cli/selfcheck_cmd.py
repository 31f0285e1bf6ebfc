"""``kep-relay selfcheck``: one complete exchange between two dev providers, in process.

A user of the first provider signs a message to a user of the second; the sending provider
issues its acceptance evidence and Dispatch; the receiving provider verifies everything and
answers with RelayREMMDAcceptance and Delivery evidence messages, which are verified in turn.
With ``--out`` the envelopes are written there for ``kep-relay envelope verify`` to inspect.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
import time
from pathlib import Path
from typing import Any

from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch, write_evidence_message
from interop.envelope.smime import build_signed_message
from interop.envelope.verify import verify_envelope
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.xades import sign_evidence
from relay.keys import read_pki, verifiers_from_pki


def register(commands: Any) -> None:
    check = commands.add_parser(
        "selfcheck", help="run one signed exchange between two dev providers"
    )
    check.add_argument(
        "--pki", type=Path, required=True, help="a dev PKI folder (kep-relay pki init)"
    )
    check.add_argument("--out", type=Path, help="write the envelopes made here into this folder")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    pki = read_pki(args.pki)
    verifiers = verifiers_from_pki(pki)
    ids = list(pki.providers)
    if len(ids) < 2:
        print("kep-relay: selfcheck needs a PKI with at least two providers", file=sys.stderr)
        return 2
    sending, receiving = pki.providers[ids[0]], pki.providers[ids[1]]
    sender = pki.users_of(sending.id)[0]
    recipient = pki.users_of(receiving.id)[0]
    now = dt.datetime.now(dt.UTC)
    tsa = LocalTsa(pki.tsa)

    def stamp(signature: bytes) -> bytes:
        return tsa.stamp(signature, now)

    original = build_signed_message(
        sender.signer,
        sender=sender.address,
        recipients=[recipient.address],
        subject="kep-relay öz denetim / self-check",
        body="Merhaba! Hello!",
        now=now,
    )
    trust = verifiers.trust
    submission = submission_evidence(
        io.BytesIO(original),
        trust[sending.id].provider,
        sender.address,
        [recipient.address],
        f"selfcheck-{int(now.timestamp())}@{sending.domain}",
        now,
    )
    dispatch = io.BytesIO()
    write_dispatch(
        dispatch,
        io.BytesIO(original),
        submission,
        sign_evidence(submission, sending.process, now),
        sending.process,
        now,
        message_id=f"<dispatch-{submission.identifier}@{sending.domain}>",
        timestamp=stamp,
    )
    envelopes = {"dispatch.eml": dispatch.getvalue()}
    results = [
        (
            "Dispatch",
            verify_envelope(io.BytesIO(envelopes["dispatch.eml"]), verifiers, now, peer=sending.id),
        )
    ]
    for name, kind, event in (
        ("relay-acceptance.eml", EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance),
        ("delivery.eml", EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery),
    ):
        evidence = follow_up(
            submission, trust[receiving.id].provider, kind, event, now, recipient=1
        )
        out = io.BytesIO()
        write_evidence_message(
            out,
            evidence,
            sign_evidence(evidence, receiving.process, now),
            receiving.process,
            now,
            message_id=f"<evidence-{evidence.identifier}@{receiving.domain}>",
            issuer_id=receiving.id,
            timestamp=stamp,
        )
        envelopes[name] = out.getvalue()
        results.append(
            (
                f"{kind.value} {event.value}",
                verify_envelope(io.BytesIO(out.getvalue()), verifiers, now, peer=receiving.id),
            )
        )
    ok = True
    for label, result in results:
        ok &= result.ok
        print(
            f"[{'ok' if result.ok else 'FAIL'}] {label}: "
            + (", ".join(c.name for c in result.checks) if result.ok else result.detail)
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, data in envelopes.items():
            (args.out / name).write_bytes(data)
        print(f"envelopes written to {args.out}")
    print(
        f"{'self-check passed' if ok else 'self-check FAILED'}: {sender.address} → "
        f"{recipient.address} in {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    return 0 if ok else 1
