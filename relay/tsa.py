"""Time-stamp tokens from the provider's TSA: RFC 3161 over HTTP, or the development TSA.

Takes: bytes to stamp (a signature value, for CAdES-T and XAdES-T; a checkpoint's signature).
Promises: a DER TimeStampToken that answers our request (``interop.cms.tsp.read_reply``: our
imprint, our nonce, the configured policy, the TSA's certificate inside), from a TSA whose
time agrees with ours, and trusted when a validator is given. On failure: ``TsaUnavailable``,
whatever the cause, and nothing else (a bug aside).

**Every failure is temporary trouble for the node.** Evidence must never go out unstamped in a
production configuration (INTEROP-PROFILE.md §5), so the node defers the work that needs a
token and tells an operator; ``TsaUnavailable`` is a ``TemporaryTrouble`` (451 4.3.0 if a
peer must hear anything; ``is_environmental``: not counted against a message). Whether the
*same request* may pass again without anyone acting is ``passes_on_retry``: yes for a TSA that
cannot be reached, is slow, answers 5xx or 429, or refuses for its own trouble (waiting,
timeNotAvailable, systemFailure); no for a refused policy or algorithm, an HTTP 4xx, a reply
that is not a token for our request, a token we do not trust or a TSA whose clock is off:
those are our configuration's fault or the TSA's, and will not pass on retry. ``stamp`` retries
only the first kind, ``retries`` times, with back-off; ``why`` names the cause for the log.

**Threads.** ``Stamper.stamp`` is a coroutine for one event loop (``HttpStamper`` holds one
``httpx.AsyncClient``, bound to the loop it is first used on). Code on threads uses
``ThreadedStamper``: it runs the stamper on an event loop of its own, on one daemon thread,
and its ``stamp`` may be called from any number of threads at once; each call waits at most
``wait`` seconds. That works where the signatures are made, including the crypto worker
processes (``relay.crypto``), which have no event loop of the node to borrow. Code that has
the node's loop and runs on another thread may call ``stamp_from_thread`` instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import random
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import httpx
import structlog
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from interop.cms.parse import ParsedSignedData
from interop.cms.timestamp import LocalTsa, verify_token
from interop.cms.tsp import NONCE_BITS, Refused, TimeStampRequest, read_reply, respond
from interop.errors import CmsFormatError, ConfigurationError, KepError, cause_text
from interop.pathval import CertificateValidator
from relay.errors import TemporaryTrouble

log = structlog.get_logger("kep.tsa")

Clock = Callable[[], dt.datetime]

# RFC 3161 §3.4 media types. Some older TSAs answer with "application/timestamp-response"
# (an early draft's name), which is accepted on input.
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPES = frozenset({"application/timestamp-reply", "application/timestamp-response"})

# -- limits (each a TsaClientConfig field, overridable from [tsa]) --------------------------
# A TSA signs in milliseconds; public TSAs answer in well under a second. 10 s per attempt
# covers a slow TLS handshake without holding a stage's thread long.
TIMEOUT = 10.0
# Attempts after the first, for blips only: the node's own deferral retries for longer.
RETRIES = 2
# Requests in flight to the TSA at once, per process (and so connections): TSAs are shared
# services that limit each customer; 4 at ~100 ms each is ~40 tokens/s, above a node's rate.
MAX_IN_FLIGHT = 4
# A token with its TSA's chain is 2-8 KiB (three RSA-4096 certificates are ~6 KiB).
MAX_REPLY = 64 * 1024
# First pause between attempts (doubled each time up to BACKOFF_CAP, less up to half at
# random so that callers who failed together do not come back together).
BACKOFF = 0.5
BACKOFF_CAP = 5.0
# The largest difference between the TSA's genTime and our clock. A qualified TSA keeps within
# 1 s of UTC (ETSI EN 319 421 §7.7.2) and our clock is NTP-synchronised; the rest is the reply's
# time on the wire. More means one of the two clocks is wrong, and evidence would carry times
# its own token contradicts.
MAX_SKEW = 120.0
# Bounds of the configurable numbers, so that a typo cannot make a request wait an hour.
_MAX_TIMEOUT = 300.0
_MAX_RETRIES = 10
_MAX_IN_FLIGHT_CAP = 64
# The longest a ThreadedStamper waits for its loop to stop when closed.
_CLOSE_WAIT = 5.0


class TsaUnavailable(TemporaryTrouble):
    """No token now: the work that needs one waits, and an operator is told.

    ``why``: unreachable, timeout, http_status, content_type, too_big, refused, bad_reply,
    untrusted, clock, closed (a label for logs and metrics). ``passes_on_retry``: whether the
    same request may give a token later with nobody acting (see the module's docstring).
    """

    text = "Time-stamping is not available now, try again later"

    def __init__(
        self, detail: str = "", *, why: str = "unknown", passes_on_retry: bool = True
    ) -> None:
        super().__init__(detail)
        self.why = why
        self.passes_on_retry = passes_on_retry

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in crypto worker processes and pickled back to the node with its fields.
        return (
            type(self),
            (self.detail,),
            {"why": self.why, "passes_on_retry": self.passes_on_retry},
        )


@dataclass(frozen=True, slots=True)
class TsaClientConfig:
    """The ``[tsa]`` table: where the TSA is, which policy, and the limits above."""

    url: str  # http:// or https://; RFC 3161 §3.4 (tokens are signed: TLS is not required)
    policy: str | None = None  # reqPolicy, required in every token; None: the TSA's default
    timeout: float = TIMEOUT  # seconds per attempt, from connecting to the reply's last byte
    retries: int = RETRIES
    max_in_flight: int = MAX_IN_FLIGHT
    max_reply: int = MAX_REPLY
    backoff: float = BACKOFF
    max_skew: float = MAX_SKEW

    def __post_init__(self) -> None:
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise ConfigurationError(f"tsa.url {self.url!r}: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"tsa.url {self.url!r} is not an http:// or https:// URL")
        if self.policy is not None:
            TimeStampRequest.build(b"", 1, policy=self.policy)  # ConfigurationError if not an OID
        if not 0 < self.timeout <= _MAX_TIMEOUT:
            raise ConfigurationError(f"tsa.timeout must be in (0, {_MAX_TIMEOUT}] seconds")
        if not 0 <= self.retries <= _MAX_RETRIES:
            raise ConfigurationError(f"tsa.retries must be from 0 to {_MAX_RETRIES}")
        if not 1 <= self.max_in_flight <= _MAX_IN_FLIGHT_CAP:
            raise ConfigurationError(f"tsa.max_in_flight must be from 1 to {_MAX_IN_FLIGHT_CAP}")
        if not 1024 <= self.max_reply <= 1024 * 1024:
            raise ConfigurationError("tsa.max_reply must be from 1 KiB to 1 MiB")
        if not 0 <= self.backoff <= BACKOFF_CAP:
            raise ConfigurationError(f"tsa.backoff must be from 0 to {BACKOFF_CAP} seconds")
        if not 0 < self.max_skew <= 3600:
            raise ConfigurationError("tsa.max_skew must be in (0, 3600] seconds")

    def pause(self, retry: int) -> float:
        """The longest pause before retry number ``retry`` (1 for the second attempt)."""
        return min(self.backoff * 2.0 ** (retry - 1), BACKOFF_CAP)

    @property
    def longest_wait(self) -> float:
        """The longest one ``HttpStamper.stamp`` takes, once its turn comes: every attempt
        timing out, and every pause between them."""
        pauses = sum(self.pause(r) for r in range(1, self.retries + 1))
        return (self.retries + 1) * self.timeout + pauses

    @property
    def where(self) -> str:
        """The URL for the log, without any user or password in it."""
        url = httpx.URL(self.url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}{url.path}"


def new_nonce() -> int:
    """A fresh request nonce (RFC 3161 §2.4.1), from the operating system's randomness."""
    return secrets.randbits(NONCE_BITS) or 1


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Stamper(Protocol):
    async def stamp(self, data: bytes) -> bytes:
        """A DER TimeStampToken over ``data``; raises ``TsaUnavailable``."""
        ...

    async def aclose(self) -> None:
        """Release connections; call on the loop that used the stamper."""
        ...


def accept(
    request: TimeStampRequest,
    data: bytes,
    reply: bytes,
    *,
    now: dt.datetime,
    max_skew: float,
    validator: CertificateValidator | None,
) -> bytes:
    """The token in ``reply`` if it answers ``request`` at about ``now``; else TsaUnavailable."""
    try:
        answer = read_reply(request, reply)
    except CmsFormatError as exc:
        raise TsaUnavailable(exc.detail, why="bad_reply", passes_on_retry=False) from exc
    if isinstance(answer, Refused):
        raise TsaUnavailable(answer.detail, why="refused", passes_on_retry=answer.temporary)
    skew = abs((answer.gen_time - now).total_seconds())
    if skew > max_skew:
        raise TsaUnavailable(
            f"the TSA's time {answer.gen_time.isoformat()} is {skew:.0f} s from ours",
            why="clock",
            passes_on_retry=False,
        )
    if validator is not None:
        # At genTime or later: a TSA a little ahead of us is not "in the future" (MAX_SKEW).
        checked = verify_token(answer.token, data, max(now, answer.gen_time), validator)
        if not checked.ok:
            raise TsaUnavailable(
                f"the TSA's token is not trusted: {checked.detail}",
                why="untrusted",
                passes_on_retry=False,
            )
    return answer.token


class HttpStamper:
    """RFC 3161 over HTTP (§3.4): POST a TimeStampReq, read a TimeStampResp.

    One ``httpx.AsyncClient`` with at most ``max_in_flight`` connections, and a semaphore that
    lets that many requests be in flight (a request waiting for its turn is not yet timed).
    Redirects are not followed and proxy variables of the environment are not read: the TSA is
    where the configuration says. ``validator`` (the TSA trust list's) checks every token's
    chain before it is used (replaced when the trust or the CRLs change: ``Stamping.
    use_validator``); ``transport`` is for tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        config: TsaClientConfig,
        *,
        validator: CertificateValidator | None = None,
        clock: Clock = utc_now,
        nonce: Callable[[], int] = new_nonce,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.validator = validator
        self._clock = clock
        self._nonce = nonce
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(
                max_connections=config.max_in_flight,
                max_keepalive_connections=config.max_in_flight,
            ),
            follow_redirects=False,
            trust_env=False,
            headers={
                "Accept": "application/timestamp-reply",
                "Accept-Encoding": "identity",  # a token is small; no decompression bombs
                "User-Agent": "kep-relay",
            },
        )

    async def __aenter__(self) -> HttpStamper:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stamp(self, data: bytes) -> bytes:
        config = self.config
        attempts = config.retries + 1
        for attempt in range(1, attempts + 1):
            # A fresh nonce for each attempt: a late reply to an earlier one is not taken.
            request = TimeStampRequest.build(data, self._nonce(), policy=config.policy)
            try:
                async with self._slots:
                    reply = await self._post(request.der)
                return accept(
                    request,
                    data,
                    reply,
                    now=self._clock(),
                    max_skew=config.max_skew,
                    validator=self.validator,
                )
            except TsaUnavailable as exc:
                if not exc.passes_on_retry or attempt == attempts:
                    log.error(
                        "tsa_unavailable",
                        tsa=config.where,
                        why=exc.why,
                        attempts=attempt,
                        passes_on_retry=exc.passes_on_retry,
                        detail=exc.detail,
                    )
                    raise
                pause = config.pause(attempt) * (1 - random.random() / 2)  # noqa: S311 (jitter)
                log.warning(
                    "tsa_attempt_failed",
                    tsa=config.where,
                    why=exc.why,
                    attempt=attempt,
                    retry_in=round(pause, 3),
                    detail=exc.detail,
                )
                await asyncio.sleep(pause)
        raise AssertionError("the last attempt returns or raises")

    async def _post(self, body: bytes) -> bytes:
        config = self.config
        try:
            # httpx times each phase (connect, each read); this bounds the whole exchange, so a
            # TSA that trickles its reply a byte at a time is cut too.
            async with asyncio.timeout(config.timeout):
                async with self._client.stream(
                    "POST", config.url, content=body, headers={"Content-Type": QUERY_TYPE}
                ) as response:
                    self._check_head(response)
                    return await self._read_body(response)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TsaUnavailable(
                f"no reply within {config.timeout} s", why="timeout", passes_on_retry=True
            ) from exc
        except httpx.RequestError as exc:  # refused, reset, DNS, TLS, a broken HTTP reply
            raise TsaUnavailable(
                f"the TSA cannot be reached: {cause_text(exc)}",
                why="unreachable",
                passes_on_retry=True,
            ) from exc

    def _check_head(self, response: httpx.Response) -> None:
        status = response.status_code
        if status != httpx.codes.OK:
            # 5xx, 429 and 408 are the server's passing state; anything else (404, a redirect)
            # is a URL or a request that must change.
            passes = status >= 500 or status in (429, 408)
            raise TsaUnavailable(
                f"the TSA answered HTTP {status}", why="http_status", passes_on_retry=passes
            )
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in REPLY_TYPES:
            raise TsaUnavailable(
                f"the TSA answered {media or 'no content type'!r}, not a time-stamp reply",
                why="content_type",
                passes_on_retry=False,
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise TsaUnavailable(
                f"the TSA's reply is {encoding}-encoded, which was not asked for",
                why="content_type",
                passes_on_retry=False,
            )
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_reply:
            raise self._too_big()

    async def _read_body(self, response: httpx.Response) -> bytes:
        body = bytearray()
        # Counted as it comes; no decoding happens (_check_head refused any content-encoding).
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.config.max_reply:
                raise self._too_big()
        return bytes(body)

    def _too_big(self) -> TsaUnavailable:
        return TsaUnavailable(
            f"the TSA's reply is larger than {self.config.max_reply} bytes",
            why="too_big",
            passes_on_retry=False,
        )


class LocalStamper:
    """The development PKI's TSA, or a node's own TSA key, in this process: no server.

    Goes through the same request, reply and checks as ``HttpStamper`` (``respond`` and
    ``accept``), so a walk-through with the dev PKI exercises them too.
    """

    def __init__(
        self,
        tsa: LocalTsa,
        *,
        clock: Clock = utc_now,
        validator: CertificateValidator | None = None,
        nonce: Callable[[], int] = new_nonce,
    ) -> None:
        self.tsa = tsa
        self._clock = clock
        self._validator = validator
        self._nonce = nonce

    async def stamp(self, data: bytes) -> bytes:
        now = self._clock()
        request = TimeStampRequest.build(data, self._nonce())
        reply = respond(self.tsa, request.der, now)
        return accept(request, data, reply, now=now, max_skew=MAX_SKEW, validator=self._validator)

    async def aclose(self) -> None:
        """Nothing to release."""


def stamp_from_thread(
    stamper: Stamper, data: bytes, loop: asyncio.AbstractEventLoop, wait: float
) -> bytes:
    """``stamper.stamp(data)`` run on ``loop`` (another thread's), waiting at most ``wait`` s.

    On the loop's own thread this would wait for itself for ever: it refuses instead.
    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("stamp_from_thread called on its event loop's thread: await instead")
    try:
        future = asyncio.run_coroutine_threadsafe(stamper.stamp(data), loop)
    except RuntimeError as exc:  # the loop is closed: the node is stopping
        raise TsaUnavailable("the time-stamp client is closed", why="closed") from exc
    try:
        return future.result(wait)
    except concurrent.futures.TimeoutError as exc:
        future.cancel()  # the task on the loop is cancelled, its connection released
        raise TsaUnavailable(
            f"no token within {wait} s", why="timeout", passes_on_retry=True
        ) from exc
    except concurrent.futures.CancelledError as exc:
        raise TsaUnavailable("the time-stamp request was cancelled", why="closed") from exc


class ThreadedStamper:
    """A ``Stamper`` for code on threads: an event loop of its own on one daemon thread.

    ``stamp(data)`` is safe to call from any number of threads at once (the stamper's own
    semaphore bounds what goes out), and is a ``TimestampFunction`` for ``sign_digest`` and
    ``write_evidence_message``. ``wait`` bounds each call, queueing included; by default the
    stamper's ``longest_wait`` and a second.
    """

    def __init__(self, stamper: Stamper, wait: float | None = None) -> None:
        if wait is None:
            wait = stamper.config.longest_wait + 1 if isinstance(stamper, HttpStamper) else 10.0
        self.stamper = stamper
        self.wait = wait
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kep-tsa", daemon=True)
        self._thread.start()

    def stamp(self, data: bytes) -> bytes:
        if self._closed:
            raise TsaUnavailable("the time-stamp client is closed", why="closed")
        return stamp_from_thread(self.stamper, data, self._loop, self.wait)

    def __call__(self, data: bytes) -> bytes:
        return self.stamp(data)

    def close(self) -> None:
        """Cancel the calls in progress (their callers get ``TsaUnavailable``), close the
        stamper's connections and stop the loop; calls after this raise ``TsaUnavailable``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Closing goes on whatever happens here: it is the last use of the stamper, the loop's
        # thread is a daemon, and the connections go with the process in any case.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(_CLOSE_WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CLOSE_WAIT)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.stamper.aclose()


class Stamping:
    """Where one process's time-stamps come from: the ``[tsa]`` URL (a ``ThreadedStamper``
    over ``HttpStamper``, made on first use, so each crypto worker process has its own), a TSA
    key held in the process (the development PKI's, or ``[identity]``'s), or nowhere.

    ``function(now)`` is what ``sign_digest``, ``write_evidence_message`` and
    ``sign_evidence`` take; it raises ``TsaUnavailable`` when no token can be had.
    """

    def __init__(
        self,
        *,
        local: LocalTsa | None = None,
        remote: TsaClientConfig | None = None,
        validator: CertificateValidator | None = None,
    ) -> None:
        self.local = local
        self.remote = remote
        self._validator = validator
        self._lock = threading.Lock()
        self._threaded: ThreadedStamper | None = None

    @property
    def configured(self) -> bool:
        return self.remote is not None or self.local is not None

    def function(self, now: dt.datetime) -> Callable[[bytes], bytes] | None:
        """Stamps bytes; a key in process stamps at ``now`` (a frozen clock in tests), the
        remote TSA at its own time."""
        if self.remote is not None:
            return self._remote().stamp
        local = self.local
        if local is None:
            return None
        return lambda data: local.stamp(data, now)

    def use_validator(self, validator: CertificateValidator | None) -> None:
        """Check tokens with ``validator`` from now on (the trust or the CRLs changed)."""
        with self._lock:
            self._validator = validator
            stamper = self._threaded.stamper if self._threaded is not None else None
        if isinstance(stamper, HttpStamper):
            stamper.validator = validator

    def _remote(self) -> ThreadedStamper:
        with self._lock:
            if self._threaded is None:
                assert self.remote is not None
                self._threaded = ThreadedStamper(
                    HttpStamper(self.remote, validator=self._validator)
                )
            return self._threaded

    def close(self) -> None:
        with self._lock:
            threaded, self._threaded = self._threaded, None
        if threaded is not None:
            threaded.close()


def tsa_certificate(token: bytes) -> x509.Certificate | None:
    """The time-stamping certificate a token carries (RFC 3161: we ask for it)."""
    try:
        parsed = ParsedSignedData.parse(token)
    except KepError:
        return None
    for cert in parsed.certificates:
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        if ExtendedKeyUsageOID.TIME_STAMPING in usage:
            return cert
    return None
