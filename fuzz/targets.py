"""One fuzz target per parser entry point of ``interop``, each asserting the contract.

The contract (``interop/errors.py``): on any input a parser returns a value or raises a
``KepError``; a verifier returns a result (it raises ``KepError`` only for input it cannot read
at all); the functions that describe things for people (``decode_text``, ``subject_text``,
``signer_name``) never raise. Any other exception leaving a target is a crash, and so is a
``ContractBroken`` raised here when a value is not what the contract promises.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

from fuzz.world import CMS_CONTENT, Samples, World, one_more_user_message
from interop.address import KepAddress
from interop.cms.hashing import STRONG_DIGESTS
from interop.cms.parse import ParsedSignedData
from interop.cms.signer_info import check_signer
from interop.cms.verify import SignatureResult, verify_parsed
from interop.envelope.fields import decode_text
from interop.envelope.mime import (
    Span,
    boundary_of,
    parse_content_type,
    read_headers,
    split_multipart,
)
from interop.envelope.parse import parse_envelope
from interop.envelope.smime import locate_signed_message
from interop.envelope.user import verify_user_message
from interop.envelope.verify import verify_envelope
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.issue import submission_evidence
from interop.evidence.xades import verify_evidence
from interop.pathval import subject_text
from interop.providers import BUILTIN_DIRECTORY
from interop.reasons import Reason

T = TypeVar("T")


class ContractBroken(AssertionError):
    """A parser or verifier returned something its contract does not allow."""


@contextmanager
def refusal_allowed() -> Iterator[None]:
    """A ``KepError`` is a refusal, which the contract allows; anything else goes on up."""
    try:
        yield
    except KepError as exc:
        if not exc.detail:
            raise ContractBroken(f"{type(exc).__name__} without a detail") from exc


def refused_or(make: Callable[[], T]) -> T | None:
    """``make()``, or None when it refuses (as the contract allows)."""
    with refusal_allowed():
        return make()
    return None


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise ContractBroken(what)


def _text(data: bytes) -> str:
    # How header values reach the parsers: read_headers decodes with surrogateescape.
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[World, bytes], None]
    seeds: Callable[[World, Samples], Sequence[bytes]]


def _address(world: World, data: bytes) -> None:
    with refusal_allowed():
        address = KepAddress.parse(_text(data))
        expect(str(address) == str(address).lower(), f"{address} is not normalised")
        expect(KepAddress.parse(str(address)) == address, f"{address} does not round-trip")


def _content_type(world: World, data: bytes) -> None:
    with refusal_allowed():
        content_type = parse_content_type(_text(data))
        expect("/" in content_type.type, f"{content_type.type!r} is not type/subtype")
        if content_type.type.startswith("multipart/"):
            boundary_of(content_type)


def _mime(world: World, data: bytes) -> None:
    stream = io.BytesIO(data)
    with refusal_allowed():
        _walk(stream, Span(0, len(data)), depth=0)


def _walk(stream: io.BytesIO, span: Span, depth: int) -> None:
    headers, body = read_headers(stream, span)
    expect(span.start <= body <= span.end, f"body offset {body} outside {span}")
    content_type = headers.content_type()
    if not content_type.type.startswith("multipart/") or depth > 3:
        return
    for part in split_multipart(stream, Span(body, span.end), boundary_of(content_type)):
        expect(span.start <= part.start <= part.end <= span.end, f"part {part} outside {span}")
        _walk(stream, part, depth + 1)


def _decode_text(world: World, data: bytes) -> None:
    expect(isinstance(decode_text(_text(data)), str), "decode_text returned no text")


def _check_result(result: SignatureResult) -> None:
    expect(isinstance(result.signer_name, str), "signer_name is not text")
    expect(result.ok == (result.reason is None), "ok and reason disagree")
    expect(result.ok or bool(result.detail), "a refusal without a detail")
    if result.timestamp is not None:
        expect(isinstance(result.timestamp.detail, str), "time-stamp detail is not text")


def _cms(world: World, data: bytes) -> None:
    parsed = refused_or(lambda: ParsedSignedData.parse(data))
    if parsed is None:
        return
    content = parsed.encapsulated if parsed.encapsulated is not None else CMS_CONTENT
    algorithm = parsed.digest_algorithm
    digest = hashlib.new(algorithm, content).digest() if algorithm in STRONG_DIGESTS else b""
    with refusal_allowed():
        check_signer(parsed, digest)
    for validator, names in (
        (world.verifiers.process("hs01"), ["hs01.kep.tr"]),
        (world.verifiers.user, []),
    ):
        result = verify_parsed(
            parsed,
            digest,
            world.now,
            validator,
            expected_names=names,
            tsa_validator=world.verifiers.tsa,
            allow_sha1=True,
        )
        _check_result(result)


def _certificate(world: World, data: bytes) -> None:
    try:
        certificate = x509.load_der_x509_certificate(data)
    except Exception:  # the loader refusing it: ParsedSignedData.parse owns that boundary
        return
    expect(isinstance(subject_text(certificate), str), "subject_text is not text")
    validators = [
        world.verifiers.process("hs01"),
        world.verifiers.user,
        world.verifiers.tls("hs01"),
    ]
    for validator in validators:
        chain = validator.validate(certificate, [], world.now, ["hs01.kep.tr"])
        expect(chain.ok or chain.reason is not None, "a failed chain without a reason")
        chain.describe()


def _envelope_parse(world: World, data: bytes) -> None:
    with refusal_allowed():
        envelope = parse_envelope(io.BytesIO(data))
        expect(envelope.size == len(data), "the envelope size is not the stream's")


def _envelope_verify(world: World, data: bytes) -> None:
    with refusal_allowed():
        result = verify_envelope(io.BytesIO(data), world.verifiers, world.now, peer="hs01")
        expect(result.ok == (result.reason is None), "ok and reason disagree")
        expect(all(check.detail for check in result.checks), "a check without a detail")
        for signature in (result.envelope_signature, result.user_signature):
            if signature is not None:
                _check_result(signature)


def _user_message(world: World, data: bytes) -> None:
    with refusal_allowed():
        locate_signed_message(io.BytesIO(data), Span(0, len(data)))
    with refusal_allowed():
        result = verify_user_message(io.BytesIO(data), world.verifiers.user, world.now)
        expect(isinstance(result.subject, str), "the subject is not text")
        _check_result(result.signature)
    # The S-GW records every submission it receives in evidence, whatever its header fields:
    # refusing to read the header block is allowed, evidence that cannot be written is not.
    evidence = refused_or(
        lambda: submission_evidence(
            io.BytesIO(data),
            BUILTIN_DIRECTORY["hs01"],
            "ali.yilmaz@hs01.kep.tr",
            ["ayse.demir@hs02.kep.tr"],
            "rem-fuzz@hs01.kep.tr",
            world.now,
        )
    )
    if evidence is not None:
        xmlio.parse(xmlio.to_bytes(evidence))


def _evidence_xml(world: World, data: bytes) -> None:
    with refusal_allowed():
        xmlio.issuer_of(xmlio.safe_parse(data))
    with refusal_allowed():
        evidence = xmlio.parse(data)
        expect(xmlio.parse(xmlio.to_bytes(evidence)) == evidence, "evidence does not round-trip")


def _evidence_verify(world: World, data: bytes) -> None:
    with refusal_allowed():
        result = verify_evidence(
            data, world.now, world.verifiers.process("hs01"), expected_issuer_domain="hs01.kep.tr"
        )
        expect(result.ok == (result.reason is None), "ok and reason disagree")
        expect(result.ok or bool(result.detail), "a refusal without a detail")
        expect(result.reason is None or isinstance(result.reason, Reason), "not a Reason")
        if result.evidence is not None:
            xmlio.to_bytes(result.evidence)


def _messages(world: World, samples: Samples) -> Sequence[bytes]:
    return [samples.dispatch, samples.evidence_message, samples.original]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("address", _address, lambda w, s: [a.encode() for a in s.addresses]),
        Target(
            "content_type",
            _content_type,
            lambda w, s: [c.encode("utf-8", "surrogateescape") for c in s.content_types],
        ),
        Target("mime", _mime, _messages),
        Target("decode_text", _decode_text, lambda w, s: [t.encode() for t in s.subjects]),
        Target("cms", _cms, lambda w, s: list(s.signatures)),
        Target("certificate", _certificate, lambda w, s: list(s.certificates)),
        Target("envelope_parse", _envelope_parse, _messages),
        Target("envelope_verify", _envelope_verify, _messages),
        Target(
            "user_message",
            _user_message,
            lambda w, s: [s.original, one_more_user_message(w)],
        ),
        Target("evidence_xml", _evidence_xml, lambda w, s: [*s.evidence_xml, *s.unsigned_xml]),
        Target("evidence_verify", _evidence_verify, lambda w, s: list(s.evidence_xml)),
    )
}
