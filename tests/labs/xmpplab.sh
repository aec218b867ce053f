#!/usr/bin/env bash
# The test suite's XMPP servers: real Prosody and ejabberd from Debian, on
# 127.0.0.1 test ports, as root, never the stock services.
#
#   xmpplab.sh start  prosody|ejabberd DIR
#   xmpplab.sh stop   prosody|ejabberd DIR
#   xmpplab.sh reload prosody|ejabberd DIR   (present the current certificate files)
#
# Environment (defaults):
#   XMPP_DOMAIN=localhost        users' host; alice/alice-pw and bob/bob-pw are registered
#   EXTRA_USERS="u1 u2"         more accounts to register, each with the password NAME-pw
#   EXTRA_HOSTS=""               more hosts served with the same certificate (probe targets)
#   COMPONENT_JID=certwatch.localhost COMPONENT_SECRET=s3cret
#   C2S_PORT=15222 C2S_TLS_PORT=15223 S2S_PORT=15269 S2S_TLS_PORT=15270 COMPONENT_PORT=15347
#   TLS_CERT, TLS_KEY            PEM files; a self-signed EC certificate is made when unset
#   EJABBERD_DIST_PORT=C2S_PORT+1000 (ejabberd's Erlang distribution port)
#   EJABBERD_STARTTLS=""         non-empty: ejabberd's c2s port offers STARTTLS
#
# The component part of each server's configuration is copied from
# prosody-example/ and ejabberd-example/, so the examples cannot rot.
set -euo pipefail

die() { echo "xmpplab.sh: $*" >&2; exit 1; }
[ $# -eq 3 ] || die "usage: xmpplab.sh start|stop|reload prosody|ejabberd DIR"
verb=$1 server=$2
mkdir -p "$3"
DIR=$(cd "$3" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

DOMAIN=${XMPP_DOMAIN:-localhost}
EXTRA=${EXTRA_HOSTS:-}
JID=${COMPONENT_JID:-certwatch.localhost}
SECRET=${COMPONENT_SECRET:-s3cret}
C2S=${C2S_PORT:-15222}
C2S_TLS=${C2S_TLS_PORT:-15223}
S2S=${S2S_PORT:-15269}
S2S_TLS=${S2S_TLS_PORT:-15270}
COMP=${COMPONENT_PORT:-15347}
DIST=${EJABBERD_DIST_PORT:-$((C2S + 1000))}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ports() { # wait_ports SECONDS PORT...
  local deadline=$((SECONDS + $1)) p
  shift
  for p in "$@"; do
    until port_open "$p"; do
      [ $SECONDS -lt $deadline ] || return 1
      sleep 0.1
    done
  done
}

cert_files() {
  if [ -n "${TLS_CERT:-}" ]; then
    CERT=$TLS_CERT KEY=$TLS_KEY
  else
    CERT=$DIR/cert.pem KEY=$DIR/key.pem
    [ -f "$CERT" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -nodes -keyout "$KEY" -out "$CERT" -days 30 -subj "/CN=$DOMAIN" 2>/dev/null
  fi
}

# ------------------------------------------------------------------ Prosody
prosody_config() {
  cat <<EOF
run_as_root = true
pidfile = "$DIR/prosody.pid"
data_path = "$DIR/data"
log = { info = "$DIR/prosody.log" }
interfaces = { "127.0.0.1" }
c2s_ports = { $C2S }
c2s_direct_tls_ports = { $C2S_TLS }
s2s_ports = { $S2S }
s2s_direct_tls_ports = { $S2S_TLS }
component_ports = { $COMP }
component_interfaces = { "127.0.0.1" }
network_settings = { nagle = false }
modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix" }
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
ssl = { certificate = "$CERT"; key = "$KEY" }
EOF
  local h
  for h in $DOMAIN $EXTRA; do
    printf 'VirtualHost "%s"\n  ssl = { certificate = "%s"; key = "%s" }\n' "$h" "$CERT" "$KEY"
  done
  # The example's Component block, with this lab's name and secret.
  sed -n '/^Component /,$p' "$ROOT/prosody-example/certwatch.cfg.lua" \
    | sed -e "s/certwatch\.example\.org/$JID/" -e "s/change-me/$SECRET/"
}

prosody_start() {
  local p
  for p in $C2S $C2S_TLS $S2S $S2S_TLS $COMP; do
    port_free "$p" || die "port $p is already in use"
  done
  cert_files
  mkdir -p "$DIR/data"
  prosody_config >"$DIR/prosody.cfg.lua"
  prosodyctl --config "$DIR/prosody.cfg.lua" check config >"$DIR/check.log" 2>&1 \
    || { cat "$DIR/check.log" >&2; die "prosody configuration rejected"; }
  for u in alice bob admin ${EXTRA_USERS:-}; do
    prosodyctl --config "$DIR/prosody.cfg.lua" register "$u" "$DOMAIN" "$u-pw" >/dev/null 2>&1
  done
  prosody --config "$DIR/prosody.cfg.lua" -F >"$DIR/prosody.out" 2>&1 &
  echo $! >"$DIR/prosody.lab.pid"
  wait_ports 15 "$C2S" "$COMP" "$S2S" \
    || { tail -20 "$DIR/prosody.log" "$DIR/prosody.out" >&2; die "prosody did not open its ports"; }
}

prosody_stop() {
  local pid
  [ -f "$DIR/prosody.lab.pid" ] || return 0
  pid=$(cat "$DIR/prosody.lab.pid")
  if grep -q "prosody" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      grep -q "^State:.*[RSD]" "/proc/$pid/status" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/prosody.lab.pid"
  for _ in $(seq 50); do port_free "$C2S" && break; sleep 0.1; done
}

prosody_reload() {
  # Prosody 0.12 re-reads certificates on SIGHUP only once here (a second
  # swap kept the old key), so a reload is a quick restart.
  prosody_stop
  prosody_start
}

# ----------------------------------------------------------------- ejabberd
ejabberdctl() {
  "$DIR/ejabberdctl" --config-dir "$DIR/etc" --spool "$DIR/spool" --logs "$DIR/log" \
    --node ejabberd@localhost "$@"
}

ejabberd_start() {
  local p
  for p in $C2S $COMP $DIST; do
    port_free "$p" || die "port $p is already in use"
  done
  cert_files
  mkdir -p "$DIR/etc" "$DIR/spool" "$DIR/log"
  sed 's/^INSTALLUSER=.*/INSTALLUSER=/' /usr/sbin/ejabberdctl >"$DIR/ejabberdctl"
  chmod +x "$DIR/ejabberdctl"
  cat "$CERT" "$KEY" >"$DIR/etc/server.pem"
  echo '{lookup,["file","native"]}.' >"$DIR/etc/inetrc"
  cat >"$DIR/etc/ejabberdctl.cfg" <<EOF
ERLANG_NODE=ejabberd@localhost
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT=$DIST
ERL_OPTIONS="-setcookie certwatch-lab"
EOF
  {
    cat <<EOF
hosts:
  - "$DOMAIN"
loglevel: info
certfiles:
  - "$DIR/etc/server.pem"
auth_method: internal
disable_sasl_mechanisms: ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS", "X-OAUTH2"]
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
shaper_rules:
  c2s_shaper: none
  s2s_shaper: none
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_caps: {}
listen:
  -
    port: $C2S
    ip: "127.0.0.1"
    module: ejabberd_c2s
    shaper: none
    access: c2s
EOF
    # Offered on request only: the test clients log in in plaintext.
    [ -z "${EJABBERD_STARTTLS:-}" ] || printf '    starttls: true\n'
    # The example's listener, with this lab's port, name and password.
    sed -n '/^  -$/,$p' "$ROOT/ejabberd-example/ejabberd.yml" \
      | sed -e "s/port: 5347/port: $COMP/" -e "s/certwatch\.example\.org/$JID/" -e "s/change-me/$SECRET/"
  } >"$DIR/etc/ejabberd.yml"
  (cd "$DIR" && HOME=$DIR ejabberdctl start) >"$DIR/start.log" 2>&1 \
    || { cat "$DIR/start.log" >&2; die "ejabberdctl start failed"; }
  wait_ports 40 "$C2S" "$COMP" \
    || { tail -30 "$DIR/log/ejabberd.log" "$DIR/start.log" >&2 || true; die "ejabberd did not open its ports"; }
  local u n=0
  for u in alice bob admin ${EXTRA_USERS:-}; do
    # Eight at a time: each ejabberdctl call starts an Erlang node (~1 s).
    HOME=$DIR ejabberdctl register "$u" "$DOMAIN" "$u-pw" >/dev/null 2>&1 &
    n=$((n + 1))
    if (( n % 8 == 0 )); then wait; fi
  done
  wait
}

ejabberd_stop() {
  [ -x "$DIR/ejabberdctl" ] || return 0
  HOME=$DIR ejabberdctl stop >/dev/null 2>&1 || true
  for _ in $(seq 100); do port_free "$C2S" && port_free "$DIST" && return 0; sleep 0.1; done
  # Still there: end only our own node (its command line names our spool).
  pkill -9 -f -- "-mnesia dir \"$DIR/spool\"" 2>/dev/null || pkill -9 -f -- "$DIR/spool" || true
}

ejabberd_reload() {
  HOME=$DIR ejabberdctl reload_config >/dev/null
}

case "$server:$verb" in
  prosody:start) prosody_stop; prosody_start ;;
  prosody:stop) prosody_stop ;;
  prosody:reload) prosody_reload ;;
  ejabberd:start) ejabberd_stop; ejabberd_start ;;
  ejabberd:stop) ejabberd_stop ;;
  ejabberd:reload) ejabberd_reload ;;
  *) die "usage: xmpplab.sh start|stop|reload prosody|ejabberd DIR" ;;
esac
