"""structlog set-up: JSON lines in production, readable lines at a terminal.

Lines about a message carry its queue id, REMMD id and peer; subjects and bodies are never
logged (message content is personal data).

The level (``[log] level``: debug, info, warning, error; info by default) is a threshold the
first processor reads on every line, so ``set_level`` changes it in a running node (SIGHUP,
``relay.reload``), loggers made before included. Libraries log their warnings and errors
only (and above the threshold).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

from relay.config import LOG_LEVELS, NodeConfig

_LEVELS: dict[str, int] = {name: getattr(logging, name.upper()) for name in LOG_LEVELS}
# structlog's method names and the level each logs at.
_METHODS = {**_LEVELS, "warn": logging.WARNING, "exception": logging.ERROR}
_METHODS["critical"] = _METHODS["fatal"] = logging.CRITICAL


class _Threshold:
    """The level lines are logged from (one per process)."""

    level = logging.INFO


def set_level(name: str) -> None:
    """Log from level ``name`` up (``[log] level``); libraries from warning or above it."""
    _Threshold.level = _LEVELS[name]
    logging.getLogger().setLevel(max(logging.WARNING, _Threshold.level))


def _below_threshold(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    if _METHODS.get(method, logging.INFO) < _Threshold.level:
        raise structlog.DropEvent
    return event_dict


class _Stderr:
    """Standard error as it is when a line is written, not as it was when logging was set up:
    a command run in process (a test's ``main([...])``) may be given a stream that is closed
    once it returns, and lines logged after it must still go somewhere."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str | None = None) -> None:
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            _below_threshold,  # first: a line below the level costs nothing more
            structlog.contextvars.merge_contextvars,  # queue_id, remmd_id, peer of the work
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        # One write per line (message and newline together): node processes share stderr,
        # and with PYTHONUNBUFFERED two writes could interleave with another process's line.
        logger_factory=structlog.WriteLoggerFactory(cast(TextIO, _Stderr())),
        # No level fixed in the loggers (they are cached): _below_threshold decides.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library (aiosmtpd's "mail.log", asyncio): their
    # warnings and errors become lines of the same format, as event "library_message".
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                _library_event,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, _Threshold.level))


def _library_event(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A library's free text goes under ``message``; the event name stays countable."""
    event_dict["message"] = event_dict.pop("event", "")
    event_dict["event"] = "library_message"
    return event_dict


def warn_development(config: NodeConfig) -> None:
    structlog.get_logger("kep.node").warning(
        "development_pki",
        folder=str(config.dev_pki),
        provider=config.provider.id,
        note="keys are unencrypted and trusted by nobody else: for development only",
    )
