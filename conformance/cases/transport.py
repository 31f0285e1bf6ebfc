"""Transport and identity (INTEROP-PROFILE.md §1, §2): who may connect, what EHLO says, whose
addresses a peer may use, the size limits, and where a message's data ends."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conformance.dispatch import signed_original
from conformance.registry import case
from conformance.session import Session
from conformance.smtp import SmtpGone, Transcript

MiB = 1024 * 1024
CROSS_PROVIDER_LIMIT = 25 * MiB  # §2: the cross-provider limit on the original
ENVELOPE_ALLOWANCE = 1 * MiB  # §2: SIZE advertised = limit + 1 MiB
FAMILY = "COF-TRANSPORT"


async def _refused_before_mail(s: Session, tls: ssl.SSLContext, what: str) -> None:
    """The connection must fail, or every MAIL FROM on it be refused (§2)."""
    record_title = f"connection with {what}"
    try:
        client, _record = await s.connect(tls=tls, title=record_title)
    except SmtpGone as exc:
        s.check(f"{what}: refused at TLS or before the greeting", True, str(exc))
        return
    try:
        if client.greeting is None or client.greeting.code != 220:
            s.check(f"{what}: refused at the greeting", True, str(client.greeting))
            return
        await client.ehlo(f"gw.{s.domain(s.me)}")
        mail = await client.command(f"MAIL FROM:<{s.sender()}>")
        s.check(f"{what}: MAIL FROM refused (§2)", mail.code >= 400, str(mail))
    except SmtpGone as exc:
        s.check(f"{what}: connection ended before MAIL was accepted", True, str(exc))
    finally:
        client.close()


@case(
    "KEP-TR-01",
    "a connection without a client certificate is refused",
    section="§2",
    etsi=FAMILY,
    rule="SMTP with TLS 1.2 or newer, client certificate required. A connection whose "
    "certificate maps to no provider is refused before MAIL.",
)
async def no_client_certificate(s: Session) -> None:
    await _refused_before_mail(s, s.pki.anonymous_tls(), "no client certificate")


@case(
    "KEP-TR-02",
    "a client certificate of a CA outside the trust list is refused",
    section="§1, §2",
    etsi=FAMILY,
    rule="The peer's identity is the provider its TLS certificate maps to; a connection "
    "whose certificate maps to no provider is refused before MAIL.",
)
async def stranger_certificate(s: Session) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gw.{s.domain(s.me)}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(f"gw.{s.domain(s.me)}")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    tls = s.pki.anonymous_tls()
    with tempfile.TemporaryDirectory(prefix="kep-conformance-") as folder:
        cert, private = Path(folder) / "c.pem", Path(folder) / "k.pem"
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tls.load_cert_chain(str(cert), str(private))
    await _refused_before_mail(s, tls, "a self-signed client certificate")


@case(
    "KEP-TR-03",
    "the target's TLS certificate is the target provider's, over TLS 1.2 or newer",
    section="§1, §2",
    etsi=FAMILY,
    rule="TLS certificate (transport): serverAuth and clientAuth, subjectAltName dNSName of "
    "the gateway host. The trust list maps each provider to its TLS CA(s) and allowed host names.",
)
async def server_identity(s: Session) -> None:
    client, _record = await s.connect(title="TLS handshake")
    try:
        version = client.tls_version() or ""
        s.check("TLS 1.2 or newer (§2)", version in ("TLSv1.2", "TLSv1.3"), version)
        peer = s.pki.check_peer(s.target, client.peer_certificate(), s.now())
        s.check(
            "the server certificate maps to the target provider (§1)",
            not isinstance(peer, str) and peer.ok,
            peer if isinstance(peer, str) else (peer.detail or peer.subject),
        )
        s.check(
            "a 220 greeting",
            client.greeting is not None and client.greeting.code == 220,
            str(client.greeting),
        )
    finally:
        await client.quit()


@case(
    "KEP-TR-04",
    "EHLO advertises SIZE (limit + 1 MiB), 8BITMIME, ENHANCEDSTATUSCODES, PIPELINING",
    section="§2",
    etsi=FAMILY,
    rule="EHLO advertises at least SIZE <limit>, 8BITMIME, ENHANCEDSTATUSCODES, PIPELINING. "
    "The SMTP SIZE advertised is the limit plus an envelope allowance of 1 MiB.",
)
async def ehlo_extensions(s: Session) -> None:
    client, _record = await s.connect(title="EHLO")
    try:
        reply = await client.ehlo(f"gw.{s.domain(s.me)}")
        s.require("EHLO answered 250", reply.code == 250, str(reply))
        for name in ("8BITMIME", "ENHANCEDSTATUSCODES", "PIPELINING"):
            s.check(f"{name} advertised", name in client.extensions, ", ".join(client.extensions))
        size = client.extensions.get("SIZE", "")
        expected = CROSS_PROVIDER_LIMIT + ENVELOPE_ALLOWANCE
        s.check(
            f"SIZE {expected} advertised (25 MiB + 1 MiB)",
            size.strip() == str(expected),
            f"SIZE {size or '(none)'}",
        )
    finally:
        await client.quit()


@case(
    "KEP-TR-05",
    "MAIL FROM must be an address of the authenticated peer",
    section="§2",
    etsi=FAMILY,
    rule="MAIL FROM domain MUST belong to the authenticated peer (550 5.7.1 otherwise); a peer "
    "cannot speak for another provider.",
)
async def mail_from_domain(s: Session) -> None:
    others = [p for p in s.pki.members if p not in (s.me,)]
    other = others[0]
    client, _record = await s.connect(title="MAIL FROM of others")
    try:
        await client.ehlo(f"gw.{s.domain(s.me)}")
        for address in (f"ali.yilmaz@{s.domain(other)}", "someone@example.com", ""):
            reply = await client.command(f"MAIL FROM:<{address}>")
            s.check(
                f"MAIL FROM:<{address}> refused with 550 5.7.1",
                reply.code == 550 and reply.enhanced == "5.7.1",
                str(reply),
            )
            if reply.code == 250:
                await client.command("RSET")
        reply = await client.command(f"MAIL FROM:<{s.sender()}>")
        s.check("MAIL FROM of the peer's own domain accepted", reply.code == 250, str(reply))
    finally:
        await client.quit()


@case(
    "KEP-TR-06",
    "never an open relay: RCPT TO outside the target's domains is refused",
    section="§2",
    etsi=FAMILY,
    rule="RCPT TO MUST be in the R-GW's own domains (550 5.7.1 relay denied otherwise): the "
    "gateway is never an open relay.",
)
async def no_open_relay(s: Session) -> None:
    client, _record = await s.connect(title="RCPT TO elsewhere")
    try:
        await client.ehlo(f"gw.{s.domain(s.me)}")
        mail = await client.command(f"MAIL FROM:<{s.sender()}>")
        s.require("MAIL FROM accepted", mail.code == 250, str(mail))
        third = [p for p in s.pki.members if p not in (s.me, s.target)]
        elsewhere = [f"ayse.demir@{s.domain(third[0])}"] if third else []
        elsewhere += [f"ayse.demir@{s.domain(s.me)}", "someone@example.com"]
        for address in elsewhere:
            reply = await client.command(f"RCPT TO:<{address}>")
            s.check(
                f"RCPT TO:<{address}> refused with 550 5.7.1",
                reply.code == 550 and reply.enhanced == "5.7.1",
                str(reply),
            )
    finally:
        await client.quit()


@case(
    "KEP-TR-07",
    "SIZE= above the limit is refused at MAIL FROM",
    section="§2",
    etsi=FAMILY,
    rule="SIZE= above it: 552 5.3.4 at MAIL FROM.",
)
async def size_at_mail(s: Session) -> None:
    client, _record = await s.connect(title="MAIL FROM SIZE=")
    try:
        await client.ehlo(f"gw.{s.domain(s.me)}")
        too_big = CROSS_PROVIDER_LIMIT + ENVELOPE_ALLOWANCE + 1
        reply = await client.command(f"MAIL FROM:<{s.sender()}> SIZE={too_big}")
        s.check(
            f"SIZE={too_big} refused with 552 5.3.4",
            reply.code == 552 and reply.enhanced == "5.3.4",
            str(reply),
        )
    finally:
        await client.quit()


@case(
    "KEP-TR-08",
    "DATA above the limit is refused after the final dot, and the session goes on",
    section="§2",
    etsi=FAMILY,
    rule="DATA above it: 552 5.3.4 after the final dot, and nothing is stored.",
)
async def size_in_data(s: Session) -> None:
    client, record = await s.connect(title="DATA over SIZE")
    try:
        await client.ehlo(f"gw.{s.domain(s.me)}")
        line = b"X" * 998 + b"\r\n"
        payload = b"Subject: too big\r\n\r\n" + line * (
            (CROSS_PROVIDER_LIMIT + 2 * MiB) // len(line)
        )
        record.size = len(payload)
        done = await client.transaction(s.sender(), [s.recipients(1)[0]], payload)
        s.check(
            "552 5.3.4 after the final dot",
            done.data is not None and done.data.code == 552 and done.data.enhanced == "5.3.4",
            str(done.final),
        )
        after = await client.command("RSET")
        s.check("the session goes on (RSET answered 250)", after.code == 250, str(after))
    except SmtpGone as exc:
        s.check("552 5.3.4 after the final dot", False, f"connection ended: {exc}")
    finally:
        client.close()


@case(
    "KEP-TR-09",
    "an original above 25 MiB is refused, whatever the envelope's size",
    section="§2",
    etsi=FAMILY,
    rule="Size: the limit applies to the original message (the message/rfc822 part). "
    "Cross-provider limit 25 MiB. DATA above it: 552 5.3.4 after the final dot.",
)
async def original_too_big(s: Session) -> None:
    recipients = s.recipients(1)
    # base64 grows 57 bytes to 78 on a line: 18.4 MiB of attachment is over 25 MiB of original,
    # and the envelope around it stays under SIZE (26 MiB).
    original = signed_original(
        s.pki,
        s.sender(),
        recipients,
        "büyük ileti",
        s.now(),
        attachments=(("buyuk.bin", "application/octet-stream", b"\x00" * int(18.4 * MiB)),),
    )
    s.require(
        "the original is over 25 MiB (suite's own check)",
        len(original[0]) > CROSS_PROVIDER_LIMIT,
        f"{len(original[0])} bytes",
    )
    outgoing = s.dispatch(recipients, original=original, stamp=False)
    s.require(
        "the envelope is under SIZE (suite's own check)",
        len(outgoing.data) < CROSS_PROVIDER_LIMIT + ENVELOPE_ALLOWANCE,
        f"{len(outgoing.data)} bytes",
    )
    done = await s.send(outgoing)
    s.check(
        "552 5.3.4 after the final dot",
        done.final.code == 552 and done.final.enhanced == "5.3.4",
        str(done.final),
    )


SMUGGLING = {
    "LF.LF": b"\n.\n",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
}


@case(
    "KEP-TR-10",
    "no SMTP smuggling: only CRLF.CRLF ends DATA",
    section="§2",
    etsi=FAMILY,
    rule="SMTP (RFC 5321): the end of mail data is <CRLF>.<CRLF> (§4.1.1.4); a message's "
    "bytes are never read as commands (250 after DATA means the message, and only it, was "
    "committed).",
)
async def smuggling(s: Session) -> None:
    for name, mark in SMUGGLING.items():
        transcript = Transcript()
        record_title = f"smuggling with {name}"
        client, record = await s.connect(title=record_title)
        transcript = client.transcript
        try:
            await client.ehlo(f"gw.{s.domain(s.me)}")
            mail = await client.command(f"MAIL FROM:<{s.sender()}>")
            rcpt = await client.command(f"RCPT TO:<{s.recipients(1)[0]}>")
            if mail.code != 250 or rcpt.code != 250:
                s.check(f"{name}: transaction opened", False, f"{mail} / {rcpt}")
                continue
            start = await client.command("DATA")
            s.require(f"{name}: DATA answered 354", start.code == 354, str(start))
            smuggled = (
                b"Subject: smuggling test\r\n\r\nbody"
                + mark
                + b"NOOP\r\nNOOP\r\nNOOP\r\n"
                + b"tail\r\n.\r\n"
                + b"QUIT\r\n"
            )
            transcript.client(f"<{len(smuggled)} bytes with {name} and NOOP x3, then QUIT>")
            client.writer.write(smuggled)
            await client.writer.drain()
            replies = []
            try:
                while True:
                    replies.append(await client.read_reply())
            except SmtpGone:
                pass
            codes = [r.code for r in replies]
            s.check(
                f"{name}: one reply to the message, then 221 (no smuggled command ran)",
                len(replies) == 2 and codes[1] == 221 and codes[0] != 354,
                " | ".join(str(r) for r in replies) or "no reply",
            )
            record.size = len(smuggled)
        finally:
            client.close()
