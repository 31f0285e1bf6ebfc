"""structlog set-up: JSON lines in production, readable lines at a terminal.

Lines about a message carry its queue id, REMMD id and peer; subjects and bodies are never
logged (message content is personal data).
"""

from __future__ import annotations

import logging
import sys

import structlog

from relay.config import NodeConfig


def configure(fmt: str | None = None) -> None:
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # queue_id, remmd_id, peer of the work
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's own chatter


def warn_development(config: NodeConfig) -> None:
    structlog.get_logger("kep.node").warning(
        "development_pki",
        folder=str(config.dev_pki),
        provider=config.provider.id,
        note="keys are unencrypted and trusted by nobody else: for development only",
    )
