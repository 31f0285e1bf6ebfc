"""The TSA client (relay.tsa) against a TSA in a mock transport: no network, no openssl.

The checks against a TSA nobody here wrote (``openssl ts -reply`` behind a real HTTP server)
are in tests/tools/test_tsa_http.py.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from interop.cms.timestamp import DEV_TSA_POLICY, LocalTsa, verify_token
from interop.errors import ConfigurationError
from interop.pki.devpki import DevPki, generate
from interop.verifiers import Verifiers
from relay.errors import TemporaryTrouble, is_environmental
from relay.keys import verifiers_from_pki
from relay.tsa import (
    MAX_REPLY,
    HttpStamper,
    LocalStamper,
    ThreadedStamper,
    TsaClientConfig,
    TsaUnavailable,
    stamp_from_thread,
)
from tests.helpers import LATER, NOW

URL = "http://tsa.test/tsp"
DATA = b"signature value"
REPLY = "application/timestamp-reply"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def _config(**changes: object) -> TsaClientConfig:
    fields: dict[str, object] = {"url": URL, "policy": DEV_TSA_POLICY, "timeout": 2.0}
    fields.update(backoff=0.0)
    fields.update(changes)
    return TsaClientConfig(**fields)  # type: ignore[arg-type]


@dataclass
class FakeTsa:
    """Answers like a TSA with the dev PKI's key; ``script`` says what to do instead, in turn."""

    tsa: LocalTsa
    script: list[Handler] = field(default_factory=list)
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    delay: float = 0.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.script:
                return await self.script.pop(0)(request)
            return self.grant(request)
        finally:
            self.in_flight -= 1

    def grant(self, request: httpx.Request) -> httpx.Response:
        from interop.cms.tsp import respond

        assert request.headers["content-type"] == "application/timestamp-query"
        return httpx.Response(
            200, headers={"content-type": REPLY}, content=respond(self.tsa, request.content, NOW)
        )


def _stamper(fake: FakeTsa, verifiers: Verifiers | None = None, **changes: object) -> HttpStamper:
    return HttpStamper(
        _config(**changes),
        transport=httpx.MockTransport(fake),
        clock=lambda: NOW,
        validator=verifiers.tsa if verifiers else None,
    )


def _run(stamper: HttpStamper, data: bytes = DATA) -> bytes:
    async def go() -> bytes:
        async with stamper:
            return await stamper.stamp(data)

    return asyncio.run(go())


def _fails(stamper: HttpStamper) -> TsaUnavailable:
    with pytest.raises(TsaUnavailable) as caught:
        _run(stamper)
    return caught.value


def _status(code: int, content_type: str = "text/plain") -> Handler:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, headers={"content-type": content_type}, content=b"no")

    return answer


def _raise(exc: Exception) -> Handler:
    async def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.fixture
def fake(pki: DevPki) -> FakeTsa:
    return FakeTsa(LocalTsa(pki.tsa))


def test_token_from_the_tsa_is_checked_and_trusted(fake: FakeTsa, verifiers: Verifiers) -> None:
    token = _run(_stamper(fake, verifiers))
    assert fake.requests == 1
    assert verify_token(token, DATA, LATER, verifiers.tsa).ok  # type: ignore[arg-type]


def test_retries_5xx_and_connection_errors_then_succeeds(fake: FakeTsa) -> None:
    fake.script = [_status(500), _raise(httpx.ConnectError("refused"))]
    assert _run(_stamper(fake, retries=2))
    assert fake.requests == 3


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ([_status(503)] * 3, "http_status"),
        ([_raise(httpx.ConnectError("refused"))] * 3, "unreachable"),
        ([_raise(httpx.ReadTimeout("slow"))] * 3, "timeout"),
        ([_raise(httpx.RemoteProtocolError("cut"))] * 3, "unreachable"),
    ],
)
def test_gives_up_after_the_retries(fake: FakeTsa, script: list[Handler], why: str) -> None:
    fake.script = list(script)
    failure = _fails(_stamper(fake, retries=2))
    assert failure.why == why and failure.passes_on_retry
    assert fake.requests == 3
    assert isinstance(failure, TemporaryTrouble) and is_environmental(failure)
    assert failure.reply.code == 451


def test_a_slow_tsa_is_cut_at_the_timeout(fake: FakeTsa) -> None:
    fake.delay = 5.0
    failure = _fails(_stamper(fake, retries=1, timeout=0.1))
    assert failure.why == "timeout" and fake.requests == 2


@pytest.mark.parametrize(
    ("handler", "why"),
    [
        (_status(404), "http_status"),
        (_status(301), "http_status"),
        (_status(200, "text/html"), "content_type"),
    ],
)
def test_our_mistakes_are_not_retried(fake: FakeTsa, handler: Handler, why: str) -> None:
    fake.script = [handler] * 3
    failure = _fails(_stamper(fake))
    assert failure.why == why and not failure.passes_on_retry
    assert fake.requests == 1


def test_reply_media_type_parameters_and_old_name_are_accepted(fake: FakeTsa) -> None:
    async def old_name(request: httpx.Request) -> httpx.Response:
        reply = fake.grant(request)
        return httpx.Response(
            200,
            headers={"content-type": "Application/TimeStamp-Response; charset=binary"},
            content=reply.content,
        )

    fake.script = [old_name]
    assert _run(_stamper(fake))


def test_oversized_reply_is_refused(fake: FakeTsa) -> None:
    async def announced(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": REPLY}, content=b"0" * (MAX_REPLY + 1))

    async def chunked(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"0" * 4096

        return httpx.Response(200, headers={"content-type": REPLY}, content=body())

    for handler in (announced, chunked):
        fake.script = [handler]
        failure = _fails(_stamper(fake))
        assert failure.why == "too_big" and not failure.passes_on_retry


def test_encoded_reply_is_refused(fake: FakeTsa) -> None:
    async def gzipped(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": REPLY, "content-encoding": "gzip"}, content=b"x"
        )

    fake.script = [gzipped]
    assert _fails(_stamper(fake)).why == "content_type"


def test_refused_policy_is_not_retried(fake: FakeTsa) -> None:
    failure = _fails(_stamper(fake, policy="1.3.6.1.4.1.99999.7"))
    assert failure.why == "refused" and not failure.passes_on_retry
    assert "unaccepted_policy" in failure.detail and fake.requests == 1


def test_tsa_trouble_refusal_is_retried(fake: FakeTsa) -> None:
    from interop.cms.tsp import _TimeStampResp

    async def busy(request: httpx.Request) -> httpx.Response:
        reply = _TimeStampResp(
            {"status": {"status": "rejection", "fail_info": {"time_not_available"}}}
        ).dump()
        return httpx.Response(200, headers={"content-type": REPLY}, content=reply)

    fake.script = [busy]
    assert _run(_stamper(fake))
    assert fake.requests == 2


def test_reply_to_another_request_is_refused(fake: FakeTsa) -> None:
    async def replayed(request: httpx.Request) -> httpx.Response:
        from interop.cms.tsp import TimeStampRequest, respond

        other = TimeStampRequest.build(DATA, 12345, policy=DEV_TSA_POLICY)
        return httpx.Response(
            200, headers={"content-type": REPLY}, content=respond(fake.tsa, other.der, NOW)
        )

    fake.script = [replayed] * 3
    failure = _fails(_stamper(fake))
    assert failure.why == "bad_reply" and "nonce" in failure.detail
    assert fake.requests == 1


def test_untrusted_tsa_is_refused(fake: FakeTsa) -> None:
    stranger = verifiers_from_pki(generate(NOW, ["hs01"]))
    failure = _fails(_stamper(fake, stranger))
    assert failure.why == "untrusted" and not failure.passes_on_retry


def test_tsa_clock_far_from_ours_is_refused(fake: FakeTsa) -> None:
    stamper = HttpStamper(
        _config(), transport=httpx.MockTransport(fake), clock=lambda: NOW.replace(hour=13)
    )
    assert _fails(stamper).why == "clock"


def test_requests_in_flight_are_bounded(fake: FakeTsa) -> None:
    fake.delay = 0.05
    stamper = _stamper(fake, max_in_flight=3)

    async def go() -> list[bytes]:
        async with stamper:
            return await asyncio.gather(*(stamper.stamp(bytes([i])) for i in range(12)))

    tokens = asyncio.run(go())
    assert len(set(tokens)) == 12
    assert fake.most_in_flight == 3


def test_threaded_stamper_from_many_threads(fake: FakeTsa, verifiers: Verifiers) -> None:
    fake.delay = 0.01
    stamper = ThreadedStamper(_stamper(fake, verifiers, max_in_flight=2))
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        results[i] = stamper.stamp(bytes([i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamper.close()
    assert len(results) == 8 and fake.most_in_flight <= 2
    assert verifiers.tsa is not None
    for i, token in results.items():
        assert verify_token(token, bytes([i]), LATER, verifiers.tsa).ok
    with pytest.raises(TsaUnavailable) as caught:
        stamper.stamp(DATA)
    assert caught.value.why == "closed"


def test_threaded_stamper_bounds_the_wait_and_cancels(fake: FakeTsa) -> None:
    fake.delay = 5.0
    stamper = ThreadedStamper(_stamper(fake, timeout=10.0), wait=0.2)
    with pytest.raises(TsaUnavailable) as caught:
        stamper.stamp(DATA)
    assert caught.value.why == "timeout"
    stamper.close()


def test_stamp_from_thread_refuses_its_own_loop(fake: FakeTsa) -> None:
    stamper = _stamper(fake)

    async def on_the_loop() -> None:
        with pytest.raises(RuntimeError, match="await instead"):
            stamp_from_thread(stamper, DATA, asyncio.get_running_loop(), 1.0)
        await stamper.aclose()

    asyncio.run(on_the_loop())


def test_local_stamper_makes_trusted_tokens(pki: DevPki, verifiers: Verifiers) -> None:
    assert verifiers.tsa is not None
    local = LocalStamper(LocalTsa(pki.tsa), clock=lambda: NOW, validator=verifiers.tsa)
    threaded = ThreadedStamper(local)
    token = threaded(DATA)  # a TimestampFunction for sign_digest
    threaded.close()
    assert verify_token(token, DATA, LATER, verifiers.tsa).ok


def test_unavailable_travels_between_processes() -> None:
    error = TsaUnavailable("refused", why="refused", passes_on_retry=False)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own object)
    assert (copy.detail, copy.why, copy.passes_on_retry) == ("refused", "refused", False)


@pytest.mark.parametrize(
    "changes",
    [
        {"url": "ftp://tsa.test/"},
        {"url": "tsa.test"},
        {"url": "http://"},
        {"policy": "policy-1"},
        {"timeout": 0},
        {"timeout": 10_000},
        {"retries": -1},
        {"retries": 100},
        {"max_in_flight": 0},
        {"max_reply": 10},
        {"backoff": -1},
        {"max_skew": 0},
    ],
)
def test_config_refuses_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        _config(**changes)


def test_config_defaults_and_longest_wait() -> None:
    config = TsaClientConfig("https://user:secret@tsa.example.com.tr:8443/tsp")
    assert (config.timeout, config.retries, config.max_in_flight) == (10.0, 2, 4)
    assert config.longest_wait == 3 * 10.0 + 0.5 + 1.0
    assert config.where == "https://tsa.example.com.tr:8443/tsp"
