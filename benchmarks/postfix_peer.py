"""Private Postfix instances for ``benchmarks.bench_relay``: the baseline and hs01's MTA.

Each instance has its own ``config_directory`` (main.cf, master.cf) with its queue and data
directories under it, in a temporary folder; it listens on unprivileged loopback ports and
changes nothing system-wide (Debian's master.cf is copied, not edited). Needs Postfix
(``benchmarks/install-postfix.sh``) and root: Postfix starts as root and drops to ``postfix``.

- ``bench_plain``: Postfix relaying plain 4 KiB messages from ``smtp-source`` to ``smtp-sink``
  over 20 sessions, timed until its queue is empty (the baseline of the gateway benchmark),
  with the CPU of the instance's whole process tree over that window.
- ``Hs01Peer``: hs01's side of the gateway benchmark as a provider would run it. A sending
  instance (hs01's MTA) relays Dispatches to hs02's peer listener over implicit TLS, verifying
  hs02's certificate and presenting hs01's TLS client certificate, over up to 20 connections
  kept open between messages (TLS connection reuse through ``tlsproxy``). The Dispatches go
  into its queue before the timed window, held by a header check, and are released when the
  window opens, so the window holds Postfix relaying and hs02 working, not the submission. A
  second instance is the evidence sink: an smtpd in wrapper mode that requires a client
  certificate from the dev TLS CA, presents hs01's TLS certificate, accepts mail for
  hs01.kep.tr and discards it (``DISCARD``), counting from its log.

The CPU of an instance is that of its ``master`` process tree (``benchmarks.procstat``): every
daemon's utime + stime, plus what ``master`` reaped of daemons that exited (Postfix's daemons
exit after ``max_use`` requests or ``max_idle`` seconds).

Byte-exactness: the sending instance submits with ``sendmail -G`` (a gateway submission: no
address rewriting in headers), converts nothing on output (``disable_mime_output_conversion``)
and has no generic or canonical maps. The one header it would add, the ``Received:`` trace
header of the submission, is dropped by a header check, so that what hs02 receives can be
compared with what was built by SHA-256 (``check_bytes``, against the digest hs02 computes
while spooling); hs02 also verifies each Dispatch's CMS signature. With that header kept,
hs02 accepts the Dispatches as well (it lies outside the signed part).

Only the sink logs (to ``maillog`` in its folder, through postlogd: the count of what it
accepted); the other instances log to syslog as Debian's does, here to nowhere.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procstat import Snapshot, read_proc

POSTFIX = "/usr/sbin/postfix"
# Queue directories a message lives in until it is delivered (hold: ours until released).
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
HS01_SENDER = "ali.yilmaz@hs01.kep.tr"


def installed() -> bool:
    """Whether Postfix and its test tools (smtp-source, smtp-sink) are there."""
    tools = ("postfix", "postsuper", "postqueue", "sendmail", "smtp-source", "smtp-sink")
    return Path(POSTFIX).exists() and all(
        shutil.which(t) or Path("/usr/sbin", t).exists() for t in tools
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    """A running private Postfix: ``folder`` is its config_directory."""

    name: str
    folder: Path

    @property
    def queue(self) -> Path:
        return self.folder / "queue"

    @property
    def maillog(self) -> Path:
        return self.folder / "maillog"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MAIL_CONFIG": str(self.folder)}

    def run(self, *argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """A Postfix command against this instance (``-c``/MAIL_CONFIG); raises on failure."""
        done = subprocess.run(
            list(argv), input=stdin, env=self.env, capture_output=True, check=False
        )
        if done.returncode:
            raise RuntimeError(
                f"{' '.join(argv)} ({self.name}) exited with {done.returncode}:"
                f" {done.stderr.decode(errors='replace').strip()}"
            )
        return done

    def master_pid(self) -> int:
        return int((self.queue / "pid" / "master.pid").read_text().split()[0])

    def queued(self, queues: Iterable[str] = QUEUES) -> int:
        """Messages in the named queue directories (hashed ones walked)."""
        total = 0
        for name in queues:
            for _, _, files in os.walk(self.queue / name):
                total += len(files)
        return total

    def log_lines(self, pattern: str) -> int:
        if not self.maillog.exists():
            return 0
        needle = pattern.encode()
        with self.maillog.open("rb") as log:
            return sum(1 for line in log if needle in line)

    def log_tail(self, lines: int = 20) -> str:
        if not self.maillog.exists():
            return "(no log: start it with log=True)"
        return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])


def _main_cf(folder: Path, settings: dict[str, str], log: bool) -> str:
    base = {
        "queue_directory": str(folder / "queue"),
        "data_directory": str(folder / "data"),
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "compatibility_level": "3.6",
        "smtputf8_enable": "no",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
    }
    if log:
        base |= {"maillog_file": str(folder / "maillog"), "maillog_file_prefixes": str(folder)}
    return "".join(f"{k} = {v}\n" for k, v in (base | settings).items())


@contextlib.contextmanager
def instance(
    name: str,
    settings: dict[str, str],
    services: Iterable[str] = (),
    files: dict[str, bytes] | None = None,
    log: bool = False,
) -> Iterator[Instance]:
    """Start a private Postfix with ``settings`` over the common ones in main.cf and
    ``services`` appended to a copy of Debian's master.cf; stop it and remove it after.

    ``files`` are written into its folder first, owned by root and readable by the postfix
    group (keys included: ``tlsproxy`` reads them after dropping privileges); ``{folder}`` in
    a setting or service stands for the folder. ``log``: to ``maillog`` in its folder
    (through postlogd), else to syslog as Debian's."""
    with tempfile.TemporaryDirectory(prefix=f"kep-postfix-{name}-") as temporary:
        folder = Path(temporary)
        folder.chmod(0o755)  # Postfix's daemons run as the postfix user and must reach the queue
        for sub in ("queue", "data"):
            (folder / sub).mkdir()
        shutil.chown(folder / "data", user="postfix")
        for relative, content in (files or {}).items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(0o640)
            shutil.chown(path, group="postfix")

        def here(text: str) -> str:
            return text.replace("{folder}", str(folder))

        master = Path("/etc/postfix/master.cf").read_text()
        (folder / "master.cf").write_text(master + "".join(f"{here(s)}\n" for s in services))
        main = {k: here(v) for k, v in settings.items()}
        (folder / "main.cf").write_text(_main_cf(folder, main, log))
        postfix = Instance(name, folder)
        postfix.run(POSTFIX, "-c", str(folder), "start")
        try:
            deadline = time.monotonic() + 10
            while not (folder / "queue" / "pid" / "master.pid").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Postfix ({name}) did not start: {postfix.log_tail()}")
                time.sleep(0.05)
            yield postfix
        finally:
            subprocess.run(
                [POSTFIX, "-c", str(folder), "stop"],
                env=postfix.env,
                capture_output=True,
                check=False,
            )


@dataclass
class TreesCpu:
    """CPU seconds of named process trees (by their root's pid) between two points."""

    before: dict[str, Snapshot] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def start(self, trees: Mapping[str, int]) -> None:
        self.before = {name: Snapshot.take(pid) for name, pid in trees.items()}

    def stop(self, trees: Mapping[str, int]) -> None:
        for name, pid in trees.items():
            self.seconds[name] = Snapshot.take(pid).total() - self.before[name].total()


# --- the baseline: Postfix relaying plain 4 KiB messages ---------------------------------


@dataclass
class PlainRun:
    count: int
    elapsed: float
    postfix_ms: float  # CPU per message, the instance's whole process tree
    source_ms: float  # smtp-source, the client feeding it
    sink_ms: float  # smtp-sink, where it relays to

    @property
    def per_second(self) -> float:
        return self.count / self.elapsed


def bench_plain(count: int, connections: int) -> PlainRun:
    """smtp-source → Postfix → smtp-sink, plain SMTP, ``connections`` sessions; timed from the
    first connection until Postfix's queue is empty."""
    sink_port, in_port = free_port(), free_port()
    sink = subprocess.Popen(
        [
            "smtp-sink",
            *(["-u", "postfix"] if os.geteuid() == 0 else []),
            f"127.0.0.1:{sink_port}",
            "256",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = {
        "relayhost": f"[127.0.0.1]:{sink_port}",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject",
        "default_process_limit": "100",
        "smtp_destination_concurrency_limit": "20",
    }
    services = [f"127.0.0.1:{in_port} inet n - n - - smtpd"]
    try:
        with instance("plain", settings, services) as postfix:
            time.sleep(1)
            sink_before = _own(sink.pid)
            cpu = TreesCpu()
            cpu.start({"postfix": postfix.master_pid()})
            start = time.perf_counter()
            source = subprocess.Popen(
                [
                    "smtp-source",
                    "-c",
                    "-l",
                    "4096",
                    "-m",
                    str(count),
                    "-s",
                    str(connections),
                    "-f",
                    "ali@hs01.kep.tr",
                    "-t",
                    "ayse@hs02.kep.tr",
                    f"127.0.0.1:{in_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, status, usage = os.wait4(source.pid, 0)
            source.returncode = os.waitstatus_to_exitcode(status)
            if source.returncode:
                assert source.stderr is not None
                raise RuntimeError(f"smtp-source: {source.stderr.read().decode().strip()}")
            while postfix.queued():
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            cpu.stop({"postfix": postfix.master_pid()})
            per = 1000 / count
            return PlainRun(
                count,
                elapsed,
                cpu.seconds["postfix"] * per,
                (usage.ru_utime + usage.ru_stime) * per,
                (_own(sink.pid) - sink_before) * per,
            )
    finally:
        sink.terminate()
        sink.wait()


def _own(pid: int) -> float:
    proc = read_proc(pid)
    return proc.own if proc else 0.0


# --- hs01's MTA and evidence sink ---------------------------------------------------------


@dataclass(frozen=True)
class Hs01Tls:
    """hs01's TLS certificate and key, and the TLS CA (a dev PKI written by write_pki)."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_pki(cls, pki: Path, provider: str = "hs01") -> Hs01Tls:
        return cls(
            pki / "providers" / provider / "tls.crt",
            pki / "providers" / provider / "tls.key",
            pki / "ca" / "tls-ca.crt",
        )


def crlf(message: bytes) -> bytes:
    """Line endings as SMTP carries them (Postfix and aiosmtplib both send CRLF)."""
    return re.sub(rb"\r?\n", b"\r\n", message)


@dataclass
class Hs01Peer:
    """hs01's MTA relaying to hs02's peer listener, and hs01's evidence sink."""

    sender: Instance
    sink: Instance
    sink_port: int
    held: int = 0

    @property
    def count(self) -> int:
        """Messages the sink accepted (and discarded)."""
        return self.sink.log_lines("triggers DISCARD action")

    def trees(self) -> dict[str, int]:
        """The root process of each part (each instance's master), for its CPU."""
        return {
            "hs01's MTA (Postfix)": self.sender.master_pid(),
            "evidence sink (Postfix)": self.sink.master_pid(),
        }

    def load(self, messages: list[tuple[str, bytes]], parallel: int = 0) -> float:
        """Submit each (recipient, message) with sendmail, held in the queue; wait until every
        one is there. Returns the seconds it took (outside any timed window)."""
        start = time.perf_counter()
        before = self.sender.queued(["hold"])

        def submit(item: tuple[str, bytes]) -> None:
            recipient, message = item
            self.sender.run(
                "/usr/sbin/sendmail", "-G", "-i", "-f", HS01_SENDER, recipient, stdin=message
            )

        workers = parallel or 2 * (os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(submit, messages):
                pass
        want = before + len(messages)
        deadline = time.monotonic() + 60 + len(messages) / 50
        while self.sender.queued(["hold"]) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {self.sender.queued(['hold'])} of {want} messages reached the hold"
                    f" queue: {self.sender.log_tail()}"
                )
            time.sleep(0.1)
        self.held = want
        return time.perf_counter() - start

    def release(self) -> None:
        """Let the held messages go: hold → deferred, then a flush makes qmgr take them."""
        self.sender.run("/usr/sbin/postsuper", "-H", "ALL")
        self.sender.run("/usr/sbin/postqueue", "-f")
        self.held = 0

    def left(self) -> int:
        return self.sender.queued()

    def failed(self) -> str | None:
        """Why delivery to hs02 stalls, if it does: a delivery deferred (its reason file)."""
        reasons = [p for p in (self.sender.queue / "defer").rglob("*") if p.is_file()]
        if not reasons:
            return None
        text = reasons[0].read_text(errors="replace")
        reason = next((line for line in text.splitlines() if line.startswith("reason=")), text)
        return f"hs01's Postfix deferred {len(reasons)} messages, for example: {reason}"


@contextlib.contextmanager
def hs01_peer(
    tls: Hs01Tls, hs02_port: int, connections: int = 20, hs02_name: str = "gw.hs02.kep.tr"
) -> Iterator[Hs01Peer]:
    """Start hs01's evidence sink and hs01's MTA (relaying to 127.0.0.1:``hs02_port``,
    checking that hs02's certificate names ``hs02_name`` and chains to the TLS CA)."""
    files = {
        "tls/cert.pem": tls.cert.read_bytes(),
        "tls/key.pem": tls.key.read_bytes(),
        "tls/ca.pem": tls.ca.read_bytes(),
    }
    sink_port = free_port()
    sink_settings = {
        "myhostname": "sink.hs01.kep.tr",
        "smtpd_tls_cert_file": "{folder}/tls/cert.pem",
        "smtpd_tls_key_file": "{folder}/tls/key.pem",
        "smtpd_tls_CAfile": "{folder}/tls/ca.pem",
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_req_ccert": "yes",
        "smtpd_relay_restrictions": "",
        "smtpd_recipient_restrictions": (
            "check_recipient_access inline:{ { hs01.kep.tr = DISCARD } }, reject"
        ),
        "message_size_limit": "0",
        # Nothing is delivered, so Postfix's flow control would never see the queue drain and
        # would pause each new message by in_flow_delay (1 s).
        "in_flow_delay": "0",
        # What is discarded needs no MIME parsing, header checks or address mapping.
        "disable_mime_input_processing": "yes",
        "receive_override_options": "no_header_body_checks, no_address_mappings,"
        " no_unknown_recipient_checks, no_milters",
    }
    sink_services = [
        f"127.0.0.1:{sink_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes",
    ]
    sender_settings = {
        "myhostname": "mta.hs01.kep.tr",
        "mydomain": "hs01.kep.tr",
        "myorigin": "hs01.kep.tr",
        "relayhost": f"[127.0.0.1]:{hs02_port}",
        # Held on submission until the benchmark releases them (Hs01Peer.release).
        "header_checks": "regexp:{folder}/header_checks.regexp",
        # Nothing may change the Dispatch: no 8-bit to quoted-printable, no address maps.
        "disable_mime_output_conversion": "yes",
        "smtp_generic_maps": "",
        "canonical_maps": "",
        "sender_canonical_maps": "",
        "recipient_canonical_maps": "",
        "local_header_rewrite_clients": "",
        "message_size_limit": "0",
        # Implicit TLS (hs02's peer listener), hs02 verified by name, hs01's client cert.
        "smtp_tls_security_level": "secure",
        "smtp_tls_secure_cert_match": hs02_name,
        "smtp_tls_wrappermode": "yes",
        "smtp_tls_CAfile": "{folder}/tls/ca.pem",
        "smtp_tls_cert_file": "{folder}/tls/cert.pem",
        "smtp_tls_key_file": "{folder}/tls/key.pem",
        "smtp_tls_connection_reuse": "yes",
        # Up to ``connections`` at once from the start, connections kept for the next message.
        "default_process_limit": "100",
        "smtp_destination_concurrency_limit": str(connections),
        "smtp_initial_destination_concurrency": str(connections),
        "smtp_connection_cache_destinations": f"[127.0.0.1]:{hs02_port}",
    }
    # The trace header Postfix's pickup adds for our own submission goes, so that what arrives
    # can be compared with what was built by its SHA-256. (hs02 accepts Dispatches with it as
    # well: it lies outside the signed part.)
    checks = (
        b"/^Received: by mta\\.hs01\\.kep\\.tr \\(Postfix, from userid [0-9]+\\)/ IGNORE\n"
        b"/^Message-ID:/ HOLD held for the timed window\n"
    )
    sender_files = files | {"header_checks.regexp": checks}
    sender_services = ["tlsproxy unix - - n - 0 tlsproxy"]
    with (
        instance("hs01-sink", sink_settings, sink_services, files, log=True) as sink,
        instance("hs01-mta", sender_settings, sender_services, sender_files) as sender,
    ):
        yield Hs01Peer(sender, sink, sink_port)


def check_bytes(received: Iterable[str], built: Iterable[bytes]) -> tuple[int, int]:
    """How many of the received messages (the hex SHA-256 the receiver computed over what it
    spooled) are byte for byte one of the built ones, with line endings as SMTP carries them;
    and how many were received."""
    wanted = {hashlib.sha256(crlf(m)).hexdigest() for m in built}
    seen = exact = 0
    for digest in received:
        seen += 1
        exact += digest in wanted
    return exact, seen
