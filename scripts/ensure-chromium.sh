#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver exist for the web console tests
# (tests/test_console.py drives /usr/bin/chromium through /usr/bin/chromedriver with
# Selenium). Debian's `chromium` and `chromium-driver` packages provide both; install
# them as root when missing, as scripts/ensure-postgres.sh does for PostgreSQL.
# Without them (not root, no apt-get) the console tests are skipped with a message.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-chromium: Chromium is not installed and we are not root;" \
         "install Debian's 'chromium' and 'chromium-driver' packages to run the console tests" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; install Chromium and chromedriver" \
         "(/usr/bin/chromium, /usr/bin/chromedriver) to run the console tests" >&2
    exit 0
fi
echo "ensure-chromium: installing Chromium (apt-get install chromium chromium-driver)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-dejavu-core: without any font, text in screenshots (docs/img/) renders as boxes
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "ensure-chromium: apt-get installed chromium but /usr/bin/chromium or" \
         "/usr/bin/chromedriver is missing" >&2
    exit 1
fi
