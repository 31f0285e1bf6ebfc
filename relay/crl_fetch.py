"""CRLs over HTTP: the ``[crl]`` settings and one bounded GET.

Takes: a CRL location (an ``http://`` or ``https://`` URL from the trust list) and the
``[crl]`` settings. Promises: the bytes the location serves, within ``timeout`` and at most
``max_size`` of them, or ``CrlUnavailable`` naming why (``why``: unreachable, timeout,
http_status, too_big, content_encoding), and nothing else. It does not read the bytes: whether
they are a CRL, of which CA, and whether later than the one held is ``relay.crls``'s question,
answered by ``interop.revocation``. A CRL is signed, so plain HTTP is fine (RFC 5280 §4.2.1.13
publishes them so); redirects are not followed and proxy variables of the environment are not
read, as for the TSA (``relay.tsa``): the CRL is where the trust list says.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from interop.errors import ConfigurationError, cause_text
from interop.limits import MiB

# -- limits (each a CrlSettings field, overridable from [crl]) ------------------------------
# Seconds per fetch, from connecting to the last byte. A CRL is larger than a time-stamp token
# (a national CA's runs to megabytes) and fetched rarely, so it gets longer than the TSA's 10 s.
TIMEOUT = 30.0
# A KEP CA's CRL is a few KiB; the largest qualified CAs' are a few MiB. More is refused, so
# a location serving something else cannot fill the memory or the data folder.
MAX_SIZE = 10 * MiB
# The next fetch of a location comes after this share of the time its CA's newest CRL has
# left (nextUpdate - now): a CRL valid for a day is fetched again after 12 hours, then 6,
# then 3, ... so a CA late with its next one is asked ever more often before the held one runs
# out. RFC 5280 §5 leaves when to fetch to the relying party.
REFRESH_FRACTION = 0.5
# However long a CRL lasts, a location is fetched at least this often: a CA publishes a new
# revocation in its next CRL, usually long before the held one's nextUpdate, and the
# development PKI's CRLs last a year. An hour bounds how late a revocation is learnt.
MAX_INTERVAL = 3600.0
# And at most this often, whatever is left (a CRL about to run out, or one already past).
MIN_INTERVAL = 60.0
# After a failed fetch: the first pause, doubled after each failure up to RETRY_MAX.
RETRY_INITIAL = 30.0
RETRY_MAX = 900.0
# Bounds of the configurable numbers, so that a typo cannot make a fetch wait an hour or a
# location be asked many times a second.
_MAX_TIMEOUT = 300.0
_MAX_SIZE_CAP = 256 * MiB
_SHORTEST = 1.0


class CrlUnavailable(Exception):
    """No CRL from a location now (``why``: a label for the log and the metric)."""

    def __init__(self, detail: str, *, why: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.why = why


@dataclass(frozen=True, slots=True)
class CrlSettings:
    """The ``[crl]`` table: how CRLs are fetched and how often (the limits above)."""

    timeout: float = TIMEOUT
    max_size: int = MAX_SIZE
    refresh_fraction: float = REFRESH_FRACTION
    min_interval: float = MIN_INTERVAL
    max_interval: float = MAX_INTERVAL
    retry_initial: float = RETRY_INITIAL
    retry_max: float = RETRY_MAX

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= _MAX_TIMEOUT:
            raise ConfigurationError(f"crl.timeout must be in (0, {_MAX_TIMEOUT:.0f}] seconds")
        if not 1024 <= self.max_size <= _MAX_SIZE_CAP:
            raise ConfigurationError("crl.max_size must be from 1 KiB to 256 MiB")
        if not 0 < self.refresh_fraction <= 1:
            raise ConfigurationError("crl.refresh_fraction must be in (0, 1]")
        if not _SHORTEST <= self.min_interval <= self.max_interval:
            raise ConfigurationError(
                f"crl.min_interval must be at least {_SHORTEST:.0f} s and at most crl.max_interval"
            )
        if not _SHORTEST <= self.retry_initial <= self.retry_max:
            raise ConfigurationError(
                f"crl.retry_initial must be at least {_SHORTEST:.0f} s and at most crl.retry_max"
            )

    def interval(self, left: float) -> float:
        """Seconds to the next fetch of a location whose CA's CRL has ``left`` seconds."""
        return min(self.max_interval, max(self.min_interval, self.refresh_fraction * left))

    def retry(self, failures: int) -> float:
        """Seconds to the next fetch after ``failures`` failures in a row (1 or more)."""
        return min(self.retry_max, self.retry_initial * 2.0 ** min(failures - 1, 30))


def check_url(value: object, where: str) -> str:
    """``value`` if it is an http:// or https:// URL with a host; else ConfigurationError."""
    if isinstance(value, str):
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if url is not None and url.scheme in ("http", "https") and url.host:
            return value
    raise ConfigurationError(f"{where}: {value!r} is not an http:// or https:// URL")


def label(url: str) -> str:
    """The URL for logs and metrics, without any user or password in it."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


class CrlFetcher:
    """One ``httpx.AsyncClient`` for every location (``transport``: for tests)."""

    def __init__(
        self, settings: CrlSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            trust_env=False,
            headers={
                # RFC 2585 §4.2 names the type; servers answer with many others, and the
                # signature, not the type, says what the bytes are.
                "Accept": "application/pkix-crl, */*;q=0.5",
                "Accept-Encoding": "identity",  # counted as they come: no decompression bombs
                "User-Agent": "kep-relay",
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, url: str) -> bytes:
        settings = self.settings
        try:
            # httpx times each phase; this bounds the whole exchange, so a server trickling
            # its answer a byte at a time is cut too.
            async with asyncio.timeout(settings.timeout):
                async with self._client.stream("GET", url) as response:
                    self._check_head(response)
                    return await self._read_body(response)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise CrlUnavailable(f"no answer within {settings.timeout} s", why="timeout") from exc
        except httpx.RequestError as exc:  # refused, reset, DNS, TLS, a broken HTTP answer
            raise CrlUnavailable(
                f"cannot be reached: {cause_text(exc)}", why="unreachable"
            ) from exc

    def _check_head(self, response: httpx.Response) -> None:
        if response.status_code != httpx.codes.OK:
            raise CrlUnavailable(f"answered HTTP {response.status_code}", why="http_status")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise CrlUnavailable(
                f"answered {encoding}-encoded, which was not asked for", why="content_encoding"
            )
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_size:
            raise self._too_big()

    async def _read_body(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.settings.max_size:
                raise self._too_big()
        return bytes(body)

    def _too_big(self) -> CrlUnavailable:
        return CrlUnavailable(
            f"answered more than {self.settings.max_size} bytes (crl.max_size)", why="too_big"
        )
