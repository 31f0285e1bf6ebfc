"""Shared builders for tests: trust from a dev PKI, a signed Dispatch, outside tools."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch, write_evidence_message
from interop.envelope.smime import build_signed_message
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.model import Evidence
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import DevPki, tls_host
from interop.providers import BUILTIN_DIRECTORY
from interop.verifiers import Verifiers
from relay.keys import verifiers_from_pki, write_pki

# Frozen clock: every PKI in the tests is made at NOW and checked a little later.
NOW = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
XSD_DIR = SHARED / "standards" / "etsi-ts-102640-2-v2"


def need_tool(name: str) -> str:
    """Path of an outside program; skip when missing, but fail where CI installs it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("KEP_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{message}, and KEP_REQUIRE_TOOLS=1 says it must be")
        pytest.skip(message)
    return path


def need_privilege(what: str, works: bool) -> None:
    """Skip a test that needs a privilege this machine does not give (mounting a file
    system, say), but fail where CI runs it (KEP_REQUIRE_TOOLS=1, as root)."""
    if works:
        return
    message = f"this machine does not allow {what}"
    if os.environ.get("KEP_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message}, and KEP_REQUIRE_TOOLS=1 says it must")
    pytest.skip(message)


# The PostgreSQL the store tests use: the service on this machine unless KEP_TEST_POSTGRES
# names another (a role that may create databases). Each test gets a database of its own.
POSTGRES_ADMIN = os.environ.get(
    "KEP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards; skip when no server
    answers, but fail where CI starts one (KEP_REQUIRE_TOOLS=1)."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"no PostgreSQL at {POSTGRES_ADMIN} ({str(exc).strip()[:120]})"
        if os.environ.get("KEP_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{message}, and KEP_REQUIRE_TOOLS=1 says there must be")
        pytest.skip(message)
    name = f"kep_test_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield urlunsplit(urlsplit(POSTGRES_ADMIN)._replace(path=f"/{name}"))
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Exchange:
    """A signed user message, its submission evidence and the Dispatch carrying both."""

    original: bytes
    submission: Evidence
    dispatch: bytes


def make_dispatch(
    pki: DevPki,
    *,
    sender: str = "ali.yilmaz@hs01.kep.tr",
    recipients: tuple[str, ...] = ("ayse.demir@hs02.kep.tr",),
    issuer: str = "hs01",
    subject: str = "Deneme iletisi",
    body: str = "Merhaba.\n",
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    original: bytes | None = None,
    signing_user: str | None = None,
    envelope_signer: str | None = None,
    stamp: bool = True,
    now: dt.datetime = NOW,
    extra_headers: tuple[tuple[str, str], ...] = (),
    remmd_id: str | None = None,
) -> Exchange:
    user = pki.user(signing_user or sender)
    if original is None:
        original = build_signed_message(
            user.signer,
            sender=sender,
            recipients=list(recipients),
            subject=subject,
            body=body,
            now=now,
            attachments=attachments,
            extra_headers=extra_headers,
        )
    provider = pki.providers[issuer]
    submission = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY[issuer],
        sender,
        recipients,
        remmd_id or f"rem-{abs(hash((sender, subject, body))) % 10**12}@{provider.domain}",
        now,
    )
    signer = pki.providers[envelope_signer or issuer].process
    tsa = LocalTsa(pki.tsa)
    out = io.BytesIO()
    write_dispatch(
        out,
        io.BytesIO(original),
        submission,
        sign_evidence(submission, signer, now),
        signer,
        now,
        message_id=f"<d-{submission.identifier}@{provider.domain}>",
        timestamp=(lambda s: tsa.stamp(s, now)) if stamp else None,
    )
    return Exchange(original, submission, out.getvalue())


def make_evidence_message(
    pki: DevPki,
    about: Evidence,
    *,
    issuer: str = "hs02",
    evidence_type: EvidenceType = EvidenceType.DeliveryNonDeliveryToRecipient,
    event: Event = Event.Delivery,
    now: dt.datetime = NOW,
) -> tuple[Evidence, bytes]:
    evidence = follow_up(about, BUILTIN_DIRECTORY[issuer], evidence_type, event, now, recipient=1)
    signer = pki.providers[issuer].process
    out = io.BytesIO()
    write_evidence_message(
        out,
        evidence,
        sign_evidence(evidence, signer, now),
        signer,
        now,
        message_id=f"<e-{evidence.identifier}@{issuer}.kep.tr>",
        issuer_id=issuer,
    )
    return evidence, out.getvalue()


def verifiers_for(pki: DevPki) -> Verifiers:
    return verifiers_from_pki(pki)


def production_config(
    pki: DevPki, folder: Path, peers: tuple[str, ...] = ("hs01", "hs02"), extra: str = ""
) -> Path:
    """``folder/hs01.toml``: hs01 configured for production ([identity] with a TSA key in the
    node, [trust], a [peers] table each, one node process) from ``pki``'s files, written to
    ``folder/pki``; ``extra`` is appended. Data in ``folder/data``."""
    write_pki(pki, folder / "pki")
    ca, own = folder / "pki" / "ca", folder / "pki" / "providers" / "hs01"
    tables = "".join(
        f'[peers.{p}]\nroute = "127.0.0.1:1"\nprocess_cas = ["{ca}/process-ca.crt"]\n'
        f'tls_cas = ["{ca}/tls-ca.crt"]\ntls_names = ["{tls_host(p)}"]\n'
        for p in peers
    )
    path = folder / "hs01.toml"
    path.write_text(
        f'[node]\nprovider = "hs01"\ndata_dir = "data"\nprocesses = 1\n'
        f'[identity]\nprocess_cert = "{own}/process.crt"\nprocess_key = "{own}/process.key"\n'
        f'tls_cert = "{own}/tls.crt"\ntls_key = "{own}/tls.key"\n'
        f'tsa_cert = "{folder}/pki/tsa/tsa.crt"\ntsa_key = "{folder}/pki/tsa/tsa.key"\n'
        f'[trust]\nuser_cas = ["{ca}/user-ca.crt"]\ntsa_cas = ["{ca}/process-ca.crt"]\n'
        f'crls = ["{ca}/process-ca.crl", "{ca}/tls-ca.crl", "{ca}/user-ca.crl"]\n'
        f"{tables}{extra}"
    )
    return path


def count_hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each function handed to a thread with ``asyncio.to_thread`` from now on
    (a ``functools.partial`` by its function's)."""
    handed: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        name = getattr(function, "__name__", None) or function.func.__name__  # type: ignore[attr-defined]
        handed.append(str(name))
        return await to_thread(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return handed
