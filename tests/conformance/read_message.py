"""Open (read) the message with a given subject in a kep-relay mailbox: the --read-command the
tests give the suite (``python read_message.py CONFIG RECIPIENT SUBJECT``)."""

from __future__ import annotations

import subprocess
import sys


def main(config: str, recipient: str, subject: str) -> int:
    cli = [sys.executable, "-m", "relay.cli", "mailbox"]
    listing = subprocess.run(
        [*cli, "list", "--config", config, recipient], capture_output=True, text=True, check=True
    )
    for line in listing.stdout.splitlines():
        if line.rstrip().endswith(subject):
            number = line.split()[0]
            done = subprocess.run([*cli, "read", "--config", config, recipient, number])
            return done.returncode
    print(f"no message {subject!r} in {recipient}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
