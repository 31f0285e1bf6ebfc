"""Print the Evidence message of a given type about a given subject from a kep-relay account's
Delil folder: the --evidence-command the tests give the suite
(``python show_evidence.py CONFIG SENDER SUBJECT TYPE``). Exit 1, printing nothing, while there
is none yet."""

from __future__ import annotations

import subprocess
import sys


def main(config: str, sender: str, subject: str, kind: str) -> int:
    cli = [sys.executable, "-m", "relay.cli", "mailbox"]
    folder = ["--config", config, "--folder", "Delil", sender]
    listing = subprocess.run([*cli, "list", *folder], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        if f"KEP delili: {kind} " in line and subject in line:
            shown = subprocess.run([*cli, "show", *folder, line.split()[0], "--raw"])
            return shown.returncode
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
