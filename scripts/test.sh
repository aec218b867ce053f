#!/usr/bin/env bash
# The whole test suite, as CI runs it. On a fresh Debian machine, as root:
#   bash scripts/test.sh
# It installs the Debian packages and the PyPI test client the tests need when
# they are missing (without letting Debian start any stock daemon), checks
# that imports point down the layers, formatting and lints, builds once, then runs every test inside a network
# namespace that has only the loopback interface: nothing can leave the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pkg-config libssl-dev prosody lua-sec ejabberd nsd unbound bind9-utils bind9-dnsutils tor iproute2 util-linux openssl procps python3-pip python3-dnspython profanity tmux chromium chromium-driver fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  # Debian would start the stock prosody, ejabberd, tor, nsd and unbound on
  # install (unbound would even query the real root servers): forbid it.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

if ! python3 -c 'import slixmpp' 2>/dev/null; then
  python3 -m pip install -q slixmpp==1.17.0 \
    || python3 -m pip install -q --break-system-packages slixmpp==1.17.0
fi

# The web front's test drives a real headless Chromium through WebDriver,
# and parses /metrics and the Atom feed with the reference parsers.
if ! python3 -c 'import selenium, feedparser, prometheus_client' 2>/dev/null; then
  python3 -m pip install -q selenium==4.27.1 feedparser==6.0.11 prometheus_client==0.21.1 \
    || python3 -m pip install -q --break-system-packages selenium==4.27.1 feedparser==6.0.11 prometheus_client==0.21.1
fi

python3 scripts/test_check_layers.py
python3 scripts/check-layers.py
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo build --tests

# Every test runs with only `lo`: no test can reach real DNS, the real Tor
# network or anything else outside this machine, whatever a config says.
unshare --net -- bash -c 'ip link set lo up && exec cargo test --offline -- --test-threads=2'
