#!/usr/bin/env bash
# The browser the live-page tests drive: Debian's chromium (Playwright's own browser download
# cannot be fetched on a closed network, so Playwright is pointed at this one). Installs it
# when it is missing and this user can (root with apt); otherwise says the browser tests will
# be skipped. A failed install where one was possible is an error.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
    command -v chromium >/dev/null
    exit 0
fi
echo "note: chromium is not installed (as root: apt-get install chromium); the live-page" \
     "browser tests will be skipped" >&2
