"""A message as a person reads it: its headers decoded, its text, its attachments listed.

``kep-relay mailbox show`` prints this instead of the raw S/MIME (``--raw`` gives the bytes).
Read with the standard library's ``email`` package; nothing is verified here (``kep-relay
envelope verify`` does that). Text parts are shown up to ``SHOWN_TEXT`` characters each;
attachments are listed with their decoded sizes, never printed.
"""

from __future__ import annotations

import email
import email.message
from email.policy import default as default_policy

from interop.envelope.fields import decode_text

# Characters of each text part printed; the rest is elided with a note (--raw has it all).
SHOWN_TEXT = 20_000
_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_SIGNATURES = ("application/pkcs7-signature", "application/x-pkcs7-signature")


def render(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=default_policy)
    lines = [
        f"{name}: {decode_text(str(message[name]))}"
        for name in _HEADERS
        if message[name] is not None
    ]
    # The KEP and REM fields (message identifier, evidence type and event, eTebligat...).
    lines += [
        f"{name}: {decode_text(str(value))}"
        for name, value in message.items()
        if name.lower().startswith(("x-rem-", "x-tr-rem-"))
    ]
    texts: list[str] = []
    attachments: list[str] = []
    signed = False
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        kind = part.get_content_type()
        if kind in _SIGNATURES:
            signed = True
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        name = part.get_filename()
        if name is None and kind == "text/plain" and not part.is_attachment():
            texts.append(_text(part))
        elif name is not None or part.is_attachment() or kind != "text/html":
            attachments.append(f"  {decode_text(name or '(no name)')}  {kind}, {size} bytes")
    if signed:
        lines.append("Signed: S/MIME (kep-relay envelope verify checks the signature)")
    lines.append("")
    lines += texts or ["(no text part)"]
    if attachments:
        lines += ["", f"Attachments ({len(attachments)}):", *attachments]
    return "\n".join(lines) + "\n"


def _text(part: email.message.Message) -> str:
    try:
        content = str(part.get_content())  # type: ignore[attr-defined]
    except (LookupError, ValueError):  # an unknown charset: shown as bytes would be
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    content = content.replace("\r\n", "\n").rstrip("\n")
    if len(content) > SHOWN_TEXT:
        elided = len(content) - SHOWN_TEXT
        content = content[:SHOWN_TEXT] + f"\n[... {elided} more characters; --raw shows all]"
    return content
