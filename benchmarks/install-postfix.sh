#!/usr/bin/env bash
# Installs Debian's Postfix (for its smtp-source and smtp-sink, and as the baseline relay of
# benchmarks/bench_relay.py) without leaving a system daemon running.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends postfix >/dev/null
postfix stop >/dev/null 2>&1 || true
