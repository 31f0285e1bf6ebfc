"""Hostile and malformed input (INTEROP-PROFILE.md §2, §3, §5): a MIME tree that does not
close, a signature that is not DER, evidence XML with a DTD, entities or an external
reference. Each must be refused (5xx, or Rejection evidence; never delivered), and the target
must go on serving: a well-formed Dispatch on a new connection afterwards is accepted."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

from conformance.cases.common import refused
from conformance.dispatch import Outgoing
from conformance.registry import case
from conformance.session import Session

FAMILY = "COF-ROBUSTNESS"


async def still_serving(s: Session) -> None:
    client, _record = await s.connect(title="still serving?")
    try:
        reply = await client.ehlo(f"gw.{s.domain(s.me)}")
        s.check("the target still serves (EHLO on a new connection)", reply.code == 250, str(reply))
    finally:
        await client.quit()


def _replace(outgoing: Outgoing, data: bytes) -> Outgoing:
    return Outgoing(
        data,
        outgoing.provider,
        outgoing.remmd,
        outgoing.sender,
        outgoing.recipients,
        outgoing.original,
        outgoing.evidence,
        outgoing.message_id,
        outgoing.ua_message_id,
        outgoing.subject,
    )


@case(
    "KEP-HI-01",
    "a MIME tree that never closes is refused",
    section="§3",
    etsi=FAMILY,
    rule="The envelope: multipart/signed … (§3). An envelope that is not this structure is "
    "InvalidMessageFormat.",
)
async def unclosed_mime(s: Session) -> None:
    outgoing = s.dispatch()
    data = outgoing.data
    # Cut the envelope after the signed part's first boundary: no closing delimiter, no p7s.
    cut = data[: data.index(b"ileti.eml") + 200]
    await refused(s, _replace(outgoing, cut), "unclosed MIME", ("InvalidMessageFormat",))
    await still_serving(s)


@case(
    "KEP-HI-02",
    "a smime.p7s that is not DER is refused",
    section="§3",
    etsi=FAMILY,
    rule="smime.p7s is a detached CMS SignedData (DER).",
)
async def broken_der(s: Session) -> None:
    outgoing = s.dispatch()
    data = outgoing.data
    head, sep, tail = data.rpartition(b'name="smime.p7s"')
    body_start = tail.index(b"\r\n\r\n") + 4
    end = tail.index(b"\r\n--", body_start)
    # A SEQUENCE claiming far more content than follows, then junk.
    junk = base64.encodebytes(b"\x30\x84\x7f\xff\xff\xff\x06\x09" + b"\xa0" * 300).replace(
        b"\n", b"\r\n"
    )
    spoiled = head + sep + tail[:body_start] + junk.rstrip(b"\r\n") + tail[end:]
    await refused(s, _replace(outgoing, spoiled), "broken DER", ("InvalidMessageFormat",))
    await still_serving(s)


LAUGHS = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
)
EXTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>\n'
)


def _prefixed(prefix: bytes, reference: bytes) -> Callable[[bytes], bytes]:
    def spoil(xml: bytes) -> bytes:
        body = re.sub(rb"^<\?xml[^>]*\?>\s*", b"", xml)
        # The entity is used in the subject, so a parser that expands it would show it.
        body = re.sub(rb"(<(?:\w+:)?MessageSubject>)", rb"\1" + reference, body, count=1)
        return prefix + body

    return spoil


@case(
    "KEP-HI-03",
    "evidence XML with a DTD and nested entities is refused",
    section="§5",
    etsi=FAMILY,
    rule="Parsers MUST refuse DTDs, entities and external references.",
)
async def entity_expansion(s: Session) -> None:
    outgoing = s.dispatch(evidence_xml=_prefixed(LAUGHS, b"&lol3;"))
    await refused(s, outgoing, "DTD with entities", ("InvalidMessageFormat",))
    await still_serving(s)


@case(
    "KEP-HI-04",
    "evidence XML with an external entity is refused",
    section="§5",
    etsi=FAMILY,
    rule="Parsers MUST refuse DTDs, entities and external references.",
)
async def external_entity(s: Session) -> None:
    outgoing = s.dispatch(evidence_xml=_prefixed(EXTERNAL, b"&ext;"))
    await refused(s, outgoing, "external entity", ("InvalidMessageFormat",))
    await still_serving(s)
