#!/usr/bin/env bash
# A private Tor network for the test suite: 3 v3 directory authorities,
# 5 relays (3 of them exits) and 1 plain tor client with a SOCKS port, all
# Debian `tor` on 127.0.0.1. Nothing here ever names a public Tor address,
# and `start` refuses to run unless this process is in a network namespace
# whose only interface is lo (the exits accept *:*, IPv4 and IPv6, and exit
# to 127.0.0.0/8 and ::1; the namespace is what keeps them on loopback). Run it as e.g.
#   unshare --net -- bash -c 'ip link set lo up && exec bash tornet.sh start DIR'
#
#   tornet.sh start DIR   wipe DIR, write keys and configs, start every tor,
#                         wait until the network is usable. Prints nothing
#                         but errors (exit 1; everything started is stopped
#                         again). Exit 2: not isolated, or bad usage.
#   tornet.sh stop DIR    stop the tors started in DIR (by pid file only).
#   tornet.sh restart DIR after stop: start the same network again (the same
#                         keys, configs and ports in DIR, nothing regenerated;
#                         the nodes' other cached state is dropped) and wait
#                         until it is usable, as start does. For tests of a
#                         Tor outage.
#
# Environment (defaults):
#   TORNET_PORT_BASE=17000  ports used (all on 127.0.0.1):
#                             BASE+1..3    authority ORPorts   (a1..a3)
#                             BASE+11..13  authority DirPorts
#                             BASE+21..25  relay ORPorts       (r1..r5; r1..r3 exits)
#                             BASE+50      client SocksPort    (c1)
#                             BASE+51      client ControlPort  (cookie:
#                                          DIR/c1/data/control_auth_cookie)
#   TORNET_KEYCACHE=        a directory to keep the nodes' long-term keys in
#                           between runs (created; generated once, under
#                           flock). Empty: keys are generated into DIR/keys.
#   TORNET_OWNER_PID=       every tor exits when this process is gone
#                           (__OwningControllerProcess; tor polls it about
#                           every 15 s). Default: this script's parent.
#   TORNET_TIMEOUT=90       seconds to wait for a usable network.
#   TORNET_REJECT_PORT=     a port every exit refuses on 127.0.0.1 and ::1
#                           (but allows elsewhere, so the policy summaries in
#                           the directory still list it): streams there end
#                           with END_REASON_EXITPOLICY. Empty: none.
#   TORNET_R1_REJECT6_PORT= a port the first exit (r1) alone refuses on ::1
#                           (the others carry it): a stream there through r1
#                           ends with END_REASON_EXITPOLICY. Empty: none.
#   TORNET_EXIT_NAMESERVER=127.0.0.1  the (loopback) nameserver the exits
#                           resolve hostnames with, port 53.
#
# "Usable" means: the client tor logged "Bootstrapped 100%", and every node
# (authorities, relays, client) holds a microdesc consensus that lists all 8
# routers as Running and Valid, at least 3 of them Exit, signed by at least
# 2 of the 3 authorities. (The relays are the directory caches arti fetches
# from; a cache with an older, exit-less consensus would stall arti.)
#
# Output in DIR:
#   arti.toml   arti's own TOML ([tor_network] authorities + fallback_caches,
#               [path_rules], [address_filter]) for TorClientConfigBuilder;
#               no storage section (the caller adds one).
#   socks5      the client's SOCKS address, "127.0.0.1:PORT" (written last)
#   nodes       one line per router: NAME ROLE ORPORT RSA-FINGERPRINT ED25519-ID
#   NAME/       a1 a2 a3 r1 .. r5 c1: torrc, tor.pid, notice.log,
#               stdout.log, data/ (DataDirectory)
#   resolv.conf the exits' resolver config; bwfile the authorities' V3BandwidthsFile
#   timings     seconds spent on keys/configs and on waiting; wait.log what
#               the wait was waiting for, and when that changed
set -euo pipefail

die() { echo "tornet.sh: $*" >&2; exit 1; }
usage() { echo "usage: tornet.sh start|stop|restart DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
verb=$1
[ -n "$2" ] || usage
case "$2" in /*) DIR=$2 ;; *) DIR=$PWD/$2 ;; esac
DIR=${DIR%/}
case $DIR in *[[:space:]\"\'\\]*) die "DIR must not contain whitespace, quotes or backslashes (it goes into torrc lines)" ;; esac

BASE=${TORNET_PORT_BASE:-17000}
TIMEOUT=${TORNET_TIMEOUT:-90}
OWNER=${TORNET_OWNER_PID:-$PPID}
EXIT_NS=${TORNET_EXIT_NAMESERVER:-127.0.0.1}
KEYCACHE=${TORNET_KEYCACHE:-}
REJECT_PORT=${TORNET_REJECT_PORT:-}
R1_REJECT6_PORT=${TORNET_R1_REJECT6_PORT:-}

AUTHS="a1 a2 a3"
RELAYS="r1 r2 r3 r4 r5"
EXITS="r1 r2 r3"
ROUTERS="$AUTHS $RELAYS"
ALL="$ROUTERS c1"

orport() {
    case $1 in
        a?) echo $((BASE + ${1#a})) ;;
        r?) echo $((BASE + 20 + ${1#r})) ;;
    esac
}
dirport() { echo $((BASE + 10 + ${1#a})); }
SOCKS_PORT=$((BASE + 50))
CONTROL_PORT=$((BASE + 51))

is_exit() { case " $EXITS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- stop

# The pid in DIR/NAME/tor.pid, if it is alive and is the tor we started with
# DIR/NAME/torrc (a recycled pid is left alone).
our_pid() {
    local name=$1 pid
    [ -s "$DIR/$name/tor.pid" ] || return 1
    pid=$(tr -dc 0-9 <"$DIR/$name/tor.pid")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    case $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) in
        *" $DIR/$name/torrc"*) ;;
        *) return 1 ;;
    esac
    echo "$pid"
}

stop_all() {
    local name pid pids="" i
    for name in $ALL; do
        if pid=$(our_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids="$pids $pid"
        fi
    done
    # ShutdownWaitLength 0: relays exit at once. Give them 5 s, then KILL.
    for i in $(seq 50); do
        local alive=""
        for pid in $pids; do
            # gone, or a zombie waiting for whoever adopted the daemon
            if [ -e "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
                alive="$alive $pid"
            fi
        done
        pids=$alive
        [ -z "$pids" ] && break
        sleep 0.1
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    for name in $ALL; do rm -f "$DIR/$name/tor.pid"; done
}

if [ "$verb" = stop ]; then
    [ -d "$DIR" ] || exit 0
    stop_all
    exit 0
fi
case $verb in start | restart) ;; *) usage ;; esac

# ---------------------------------------------------------------- checks

# /proc/self/net/dev follows this process's network namespace
# (/sys/class/net shows the namespace sysfs was mounted in, i.e. the host's).
ifaces=$(tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
if [ "${ifaces% }" != lo ]; then
    echo "tornet.sh: refusing to start: this network namespace has interfaces other than lo ($ifaces)." >&2
    echo "tornet.sh: run me as: unshare --net -- bash -c 'ip link set lo up && exec bash tornet.sh start DIR'" >&2
    exit 2
fi
# (No `cmd | grep -q` under pipefail: grep -q exits at the first match and
# the writer may die of SIGPIPE, failing the pipeline.)
lo_addrs=$(ip -o addr show dev lo 2>/dev/null || true)
case $lo_addrs in
    *127.0.0.1/*) ;;
    *) die "lo is down or has no 127.0.0.1 here; run 'ip link set lo up' in the namespace first" ;;
esac
# The exits bind their IPv6 streams to ::1 (IPv6 may be off in the namespace).
case $lo_addrs in
    *::1/128*) ;;
    *) die "lo has no ::1 here (IPv6 disabled?); the exits need it to exit to IPv6" ;;
esac

for t in tor tor-gencert flock; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install tor util-linux)"
done
case $BASE in '' | *[!0-9]*) die "TORNET_PORT_BASE must be a number" ;; esac
[ "$BASE" -ge 1024 ] && [ "$BASE" -le 65000 ] || die "TORNET_PORT_BASE must be in 1024..65000"
case $OWNER in '' | *[!0-9]*) die "TORNET_OWNER_PID must be a pid" ;; esac
kill -0 "$OWNER" 2>/dev/null || die "owner process $OWNER is not running"
case $EXIT_NS in 127.*) ;; *) die "TORNET_EXIT_NAMESERVER must be a 127.0.0.0/8 address" ;; esac
for p in "$REJECT_PORT" "$R1_REJECT6_PORT"; do
    case $p in '' | [1-9] | [1-9][0-9] | [1-9][0-9][0-9] | [1-9][0-9][0-9][0-9] | [1-9][0-9][0-9][0-9][0-9]) ;;
        *) die "TORNET_REJECT_PORT and TORNET_R1_REJECT6_PORT must be port numbers" ;;
    esac
done

# ---------------------------------------------------------------- fresh DIR

# Every tor runs with this prefix of options; never the system torrc.
TOR=(tor --defaults-torrc /dev/null --ignore-missing-torrc)

if [ "$verb" = restart ]; then
    [ -s "$DIR/nodes" ] && [ -s "$DIR/c1/torrc" ] || die "nothing to restart in $DIR (run start first)"
    tstart=$(date +%s.%N)
    stop_all
    # The wait below looks for "Bootstrapped 100%" in a fresh log. Only the
    # keys are kept: with their old descriptors, votes and router status the
    # restarted authorities were seen to vote 2 of 8 routers for minutes,
    # while from clean data directories (as at start) the network is usable
    # in seconds. Same keys, ports and configs: the same network.
    for name in $ALL; do
        if [ -f "$DIR/$name/notice.log" ]; then mv -f "$DIR/$name/notice.log" "$DIR/$name/notice.log.1"; fi
        find "$DIR/$name/data" -mindepth 1 -maxdepth 1 ! -name keys -exec rm -rf {} +
    done
else
# (a fresh network: the rest of this section is not indented)

mkdir -p "$DIR"
tstart=$(date +%s.%N)
stop_all
for name in $ALL; do rm -rf "${DIR:?}/$name"; done
rm -rf "$DIR/keys" "$DIR/arti.toml" "$DIR/socks5" "$DIR/nodes" "$DIR/resolv.conf" "$DIR/bwfile" \
    "$DIR/timings" "$DIR/wait.log"


# Lines common to every node's torrc (set once the fingerprints are known).
common_torrc() {
    local name=$1 a
    cat <<EOF
# generated by tornet.sh
Nickname $name
DataDirectory $DIR/$name/data
PidFile $DIR/$name/tor.pid
Log notice file $DIR/$name/notice.log
RunAsDaemon 1
SafeLogging 0
TestingTorNetwork 1
UseDefaultFallbackDirs 0
ShutdownWaitLength 0
__OwningControllerProcess $OWNER
ClientUseIPv6 0
EOF
    for a in $AUTHS; do
        echo "DirAuthority $a orport=$(orport "$a") no-v2 v3ident=$(cat "$DIR/keys/$a/v3ident") 127.0.0.1:$(dirport "$a") $(cut -d' ' -f2 "$DIR/keys/$a/fingerprint")"
    done
}

relay_torrc() {
    local name=$1
    cat <<EOF
SocksPort 0
Address 127.0.0.1
ORPort 127.0.0.1:$(orport "$name")
OutboundBindAddress 127.0.0.1
AssumeReachable 1
ContactInfo tornet-$name@localhost
TestingDirAuthVoteGuard *
TestingMinExitFlagThreshold 0
RefuseUnknownExits 0
ServerDNSResolvConfFile $DIR/resolv.conf
ServerDNSDetectHijacking 0
ServerDNSAllowNonRFC953Hostnames 1
EOF
}

# ---------------------------------------------------------------- keys

# Long-term keys of one router, generated by tor itself (RSA identity,
# ed25519 master identity; onion and signing keys are made at each start),
# plus, for an authority, its v3 identity and signing key.
gen_router_keys() {
    local out=$1 name=$2 tmp
    tmp=$out/$name.gen
    rm -rf "$tmp"
    mkdir -p -m 700 "$tmp/data"
    if [ "${name#a}" != "$name" ]; then
        printf '\n' | tor-gencert --create-identity-key --passphrase-fd 0 -m 12 \
            -a "127.0.0.1:$(dirport "$name")" \
            -i "$tmp/authority_identity_key" -s "$tmp/authority_signing_key" \
            -c "$tmp/authority_certificate" >"$tmp/gencert.log" 2>&1 \
            || { cat "$tmp/gencert.log" >&2; return 1; }
    fi
    "${TOR[@]}" -f /dev/null --DataDirectory "$tmp/data" --Nickname "$name" \
        --Address 127.0.0.1 --ORPort "127.0.0.1:$(orport "$name")" \
        --ExitRelay 0 --ContactInfo none --SocksPort 0 \
        --Log "notice file $tmp/listfp.log" --list-fingerprint >/dev/null 2>&1 \
        || { cat "$tmp/listfp.log" >&2; return 1; }
    mkdir -p -m 700 "$tmp/keys"
    cp "$tmp/data/keys/secret_id_key" "$tmp/data/keys/ed25519_master_id_public_key" \
        "$tmp/data/keys/ed25519_master_id_secret_key" "$tmp/keys/"
    cp "$tmp/data/fingerprint" "$tmp/data/fingerprint-ed25519" "$tmp/"
    rm -rf "$tmp/data" "$tmp/listfp.log" "$tmp/gencert.log"
    rm -rf "${out:?}/$name"
    mv "$tmp" "$out/$name"
}

# Makes sure directory $1 holds complete keys for every router.
ensure_keys() {
    local out=$1 name pids=""
    [ -f "$out/complete" ] && return 0
    for name in $ROUTERS; do
        gen_router_keys "$out" "$name" &
        pids="$pids $!"
    done
    local ok=1 pid
    for pid in $pids; do wait "$pid" || ok=0; done
    [ $ok = 1 ] || die "key generation failed"
    echo "tornet.sh keys v1: $ROUTERS" >"$out/complete"
}

mkdir -p -m 700 "$DIR/keys"
if [ -n "$KEYCACHE" ]; then
    mkdir -p -m 700 "$KEYCACHE"
    (
        flock -w 120 9 || die "could not lock key cache $KEYCACHE"
        ensure_keys "$KEYCACHE"
    ) 9>"$KEYCACHE/.lock"
    for name in $ROUTERS; do
        cp -a "$KEYCACHE/$name" "$DIR/keys/$name"
    done
else
    ensure_keys "$DIR/keys"
fi

# Per run: a fresh authority certificate for the current address (cheap:
# tor-gencert --reuse only signs), valid for 12 months from today; the v3
# identity fingerprint from it.
for a in $AUTHS; do
    k=$DIR/keys/$a
    printf '\n' | tor-gencert --reuse --passphrase-fd 0 -m 12 \
        -a "127.0.0.1:$(dirport "$a")" \
        -i "$k/authority_identity_key" -s "$k/authority_signing_key" \
        -c "$k/authority_certificate" >"$k/gencert.log" 2>&1 \
        || { cat "$k/gencert.log" >&2; die "tor-gencert failed for $a"; }
    awk '$1 == "fingerprint" { print $2 }' "$k/authority_certificate" >"$k/v3ident"
    [ -s "$k/v3ident" ] || die "no fingerprint in $k/authority_certificate"
done

# ---------------------------------------------------------------- configs

printf 'nameserver %s\n' "$EXIT_NS" >"$DIR/resolv.conf"

# Equal measured bandwidth for every router, so that no weight is zero.
{
    date +%s
    for name in $ROUTERS; do
        echo "node_id=\$$(cut -d' ' -f2 "$DIR/keys/$name/fingerprint") bw=1000"
    done
} >"$DIR/bwfile"

: >"$DIR/nodes"
for name in $ALL; do
    mkdir -p -m 700 "$DIR/$name" "$DIR/$name/data"
    {
        common_torrc "$name"
        case $name in
            a?)
                relay_torrc "$name"
                cat <<EOF
DirPort 127.0.0.1:$(dirport "$name")
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
V3AuthNIntervalsValid 3
TestingV3AuthInitialVotingInterval 10
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
TestingV3AuthVotingStartOffset 0
AuthDirMaxServersPerAddr 0
V3BandwidthsFile $DIR/bwfile
ExitRelay 0
ExitPolicy reject *:*
EOF
                ;;
            r?)
                relay_torrc "$name"
                if is_exit "$name"; then
                    if [ -n "$R1_REJECT6_PORT" ] && [ "$name" = r1 ]; then
                        echo "ExitPolicy reject6 [::1]:$R1_REJECT6_PORT"
                    fi
                    if [ -n "$REJECT_PORT" ]; then
                        echo "ExitPolicy reject 127.0.0.1:$REJECT_PORT"
                        echo "ExitPolicy reject6 [::1]:$REJECT_PORT"
                    fi
                    cat <<EOF
ExitRelay 1
IPv6Exit 1
OutboundBindAddress [::1]
ExitPolicyRejectPrivate 0
ExitPolicyRejectLocalInterfaces 0
ExitPolicy accept 127.0.0.0/8:*
ExitPolicy accept6 [::1]:*
ExitPolicy accept *:*
EOF
                else
                    printf 'ExitRelay 0\nExitPolicy reject *:*\n'
                fi
                ;;
            c1)
                echo "SocksPort 127.0.0.1:$SOCKS_PORT IPv6Traffic"
                echo "ControlPort 127.0.0.1:$CONTROL_PORT"
                echo "CookieAuthentication 1"
                # fetch each new consensus as soon as it is out, like a
                # cache, not 75-100% of an interval later like a client
                echo "FetchDirInfoEarly 1"
                echo "FetchDirInfoExtraEarly 1"
                ;;
        esac
    } >"$DIR/$name/torrc"
    case $name in
        a? | r?)
            mkdir -p -m 700 "$DIR/$name/data/keys"
            cp "$DIR/keys/$name/keys/"* "$DIR/$name/data/keys/"
            ;;
    esac
    case $name in
        a?)
            cp "$DIR/keys/$name/authority_certificate" "$DIR/keys/$name/authority_signing_key" \
                "$DIR/$name/data/keys/"
            echo "$name authority $(orport "$name") $(cut -d' ' -f2 "$DIR/keys/$name/fingerprint") $(cut -d' ' -f2 "$DIR/keys/$name/fingerprint-ed25519")" >>"$DIR/nodes"
            ;;
        r?)
            role=relay; is_exit "$name" && role=exit
            echo "$name $role $(orport "$name") $(cut -d' ' -f2 "$DIR/keys/$name/fingerprint") $(cut -d' ' -f2 "$DIR/keys/$name/fingerprint-ed25519")" >>"$DIR/nodes"
            ;;
    esac
done

fi # fresh DIR

# ---------------------------------------------------------------- start

tk=$(date +%s.%N)
awk -v a="$tstart" -v b="$tk" 'BEGIN { printf "keys and configs %.1f s\n", b - a }' >"$DIR/timings"
failed() {
    local name
    echo "tornet.sh: $*" >&2
    for name in $ALL; do
        if [ -s "$DIR/$name/notice.log" ]; then
            echo "--- $name/notice.log (last 15 lines)" >&2
            tail -n 15 "$DIR/$name/notice.log" >&2
        fi
    done
    stop_all
    exit 1
}

# The authorities vote 4 s before each 10-second boundary (valid-after at
# :x0, votes at :x6). Started after :x6 they miss their first round and the
# following one often fails too; started just after :x0 the relays have
# uploaded their descriptors by the first vote. So wait for :x0.3 (<= 10 s).
phase=$(( $(date +%s%3N) % 10000 ))
if [ "$phase" -gt 1500 ] || [ "$phase" -lt 300 ]; then
    sleep "$(awk -v p="$phase" 'BEGIN { printf "%.3f", ((10300 - p) % 10000) / 1000 }')"
fi
t0=$(date +%s.%N)
awk -v a="$tk" -v b="$t0" 'BEGIN { printf "waiting for the voting phase %.1f s\n", b - a }' >>"$DIR/timings"

for name in $ALL; do
    # RunAsDaemon: the parent returns once the daemon has its config and
    # ports, non-zero if it failed. No stdio or lock fd stays with it.
    "${TOR[@]}" -f "$DIR/$name/torrc" </dev/null >"$DIR/$name/stdout.log" 2>&1 \
        || { cat "$DIR/$name/stdout.log" >&2; failed "tor $name did not start"; }
    # The daemon writes its pid file a moment after the parent returns.
    for i in $(seq 100); do
        our_pid "$name" >/dev/null && break
        sleep 0.05
    done
    our_pid "$name" >/dev/null || failed "tor $name wrote no pid file $DIR/$name/tor.pid"
done

# Prints why the microdesc consensus in $1 is not usable yet; silent and
# status 0 when it is.
consensus_problem() {
    [ -s "$1" ] || { echo "no consensus"; return 1; }
    awk -v want="$(echo $ROUTERS | wc -w)" -v nauth="$(echo $AUTHS | wc -w)" -v now="$(date -u +%s)" '
        function epoch(d, t,   c) {
            c = "date -u -d \"" d " " t "\" +%s"; c | getline e; close(c); return e
        }
        $1 == "valid-until" { vu = epoch($2, $3) }
        $1 == "r" { n++ }
        $1 == "s" {
            run = 0; val = 0; ex = 0; bad = 0
            for (i = 2; i <= NF; i++) {
                if ($i == "Running") run = 1
                if ($i == "Valid") val = 1
                if ($i == "Exit") ex = 1
                if ($i == "BadExit") bad = 1
            }
            if (run && val) ok++
            if (run && val && ex && !bad) exits++
        }
        $1 == "directory-signature" { sig[($2 == "sha256" || $2 == "sha1") ? $3 : $2] = 1 }
        END {
            ns = 0; for (k in sig) ns++
            if (n < want || ok < want || exits < 3 || ns * 2 <= nauth || vu < now) {
                printf "%d routers, %d running+valid, %d exits, %d signatures (need %d, %d, 3, >%d)%s\n", n, ok, exits, ns, want, want, nauth / 2, (vu < now ? ", expired" : "")
                exit 1
            }
        }' "$1"
}

deadline=$(($(date +%s) + TIMEOUT))
while :; do
    why=""
    for name in $ALL; do
        our_pid "$name" >/dev/null || failed "tor $name is no longer running"
    done
    if ! grep -q 'Bootstrapped 100%' "$DIR/c1/notice.log" 2>/dev/null; then
        why="client: $(grep -o 'Bootstrapped [0-9]*%.*' "$DIR/c1/notice.log" 2>/dev/null | tail -n 1 || true)"
        why=${why:-client: not bootstrapped}
    fi
    if [ -z "$why" ]; then
        for name in $ALL; do
            if ! p=$(consensus_problem "$DIR/$name/data/cached-microdesc-consensus"); then
                why="$name: $p"
                break
            fi
        done
    fi
    if [ "$why" != "${lastwhy:-}" ]; then
        awk -v a="$t0" -v b="$(date +%s.%N)" -v w="${why:-usable}" 'BEGIN { printf "+%5.1fs %s\n", b - a, w }' >>"$DIR/wait.log"
        lastwhy=$why
    fi
    [ -z "$why" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || failed "no usable network after ${TIMEOUT}s ($why)"
    sleep 0.5
done

# ---------------------------------------------------------------- outputs

{
    echo "# arti configuration for the private Tor network in $DIR"
    echo "# (generated by tests/labs/tornet.sh; merge over arti-client defaults,"
    echo "# add [storage] yourself). Only 127.0.0.1 appears below."
    echo
    echo "[tor_network]"
    echo "fallback_caches = ["
    for name in $ROUTERS; do
        echo "  { rsa_identity = \"$(cut -d' ' -f2 "$DIR/keys/$name/fingerprint")\", ed_identity = \"$(cut -d' ' -f2 "$DIR/keys/$name/fingerprint-ed25519")\", orports = [\"127.0.0.1:$(orport "$name")\"] },"
    done
    echo "]"
    echo
    echo "[tor_network.authorities]"
    printf 'v3idents = ['
    sep=""
    for a in $AUTHS; do printf '%s"%s"' "$sep" "$(cat "$DIR/keys/$a/v3ident")"; sep=", "; done
    echo "]"
    for field in uploads downloads votes; do
        printf '%s = [' "$field"
        sep=""
        for a in $AUTHS; do printf '%s["127.0.0.1:%s"]' "$sep" "$(dirport "$a")"; sep=", "; done
        echo "]"
    done
    cat <<EOF

[path_rules]
# every relay is on 127.0.0.1: no two may count as one family
ipv4_subnet_family_prefix = 33
ipv6_subnet_family_prefix = 129
# a young network has no Stable relays (5222 is in arti's default list)
long_lived_ports = []

[address_filter]
allow_local_addrs = true
EOF
} >"$DIR/arti.toml.tmp"
mv "$DIR/arti.toml.tmp" "$DIR/arti.toml"

t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "network usable %.1f s after the first tor started\n", b - a }' >>"$DIR/timings"
echo "127.0.0.1:$SOCKS_PORT" >"$DIR/socks5.tmp"
mv "$DIR/socks5.tmp" "$DIR/socks5"
