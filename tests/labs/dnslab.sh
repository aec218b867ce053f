#!/usr/bin/env bash
# A DNSSEC lab for the test suite: one NSD authoritative for a signed root,
# a signed TLD and many leaf zones, plus two unbound resolvers iterating from
# that root. Everything listens on ${DNSLAB_ADDR_BASE}.{1,2,3} port 53; nothing
# ever queries outside 127.0.0.0/8.
#
#   dnslab.sh start DIR   build keys, zones, configs in DIR (wiped first);
#                         start the daemons; wait until they answer.
#                         Prints nothing but errors.
#   dnslab.sh stop DIR    stop the daemons started in DIR (by pid file only).
#   dnslab.sh break DIR   serve flip.test with the RRSIG over the TLSA at
#                         _<C2S>._tcp.xmpp.flip.test. corrupted (bogus);
#   dnslab.sh edit DIR    serve edit.test with TLSA GOOD in place of OTHER (an
#                         admin's fix; TTL 300 s); unedit DIR: back to OTHER.
#   dnslab.sh fix DIR     serve the good flip.test again. All four make the
#                         running NSD reload (SIGHUP) and return once it
#                         serves the new signature; they fail otherwise.
#   dnslab.sh resign DIR ZONE END [START]
#                         sign ZONE.test (shortsig, skew or soon) again with
#                         its keys, signatures valid from START to END
#                         (dnssec-signzone -s/-e syntax: now+SECONDS, +SECONDS,
#                         YYYYMMDDHHMMSS; START defaults to an hour ago), and
#                         serve it like the four above: e.g.
#                         `resign DIR shortsig now+2592000` moves the horizon
#                         of shortsig.test 30 days out (an admin re-signing).
#   dnslab.sh roll DIR ZONE one|both|next
#                         serve ZONE.test (roll or rush) with TLSA 3 1 1 GOOD
#                         only (one), GOOD and OTHER (both: current + next),
#                         or OTHER only (next: the old record removed), like
#                         the four above.
#
# Environment (defaults): C2S_PORT=15222 C2S_TLS_PORT=15223 S2S_PORT=15269
#   S2S_TLS_PORT=15270 DOWN_PORT=15999 NOSTARTTLS_PORT=15998 SIXMITM_PORT=15996
#   EXITREFUSED_PORT=15995 TARPIT_PORT=15994 HORIZON_PORT=15993
#   SOON_PORT=15992 SOON_TA_PORT=15991 SOON_TA (optional, 64 hex chars)
#   DNSLAB_ADDR_BASE=127.53.0  DNSLAB_TIMEOUT=10 (seconds per readiness wait)
#   GOOD_SPKI, OTHER_SPKI: 64 hex chars each, required (SHA-256 of an SPKI;
#   GOOD is the key the test XMPP server presents).
#   BENCH_DOMAINS=0  BENCH_HOSTS=0  BENCH_HOST_BASE=127.57.0  BENCH_HOST_ADDRS=8
#   (the benchmark's zone, see bench.test below)
#   HOSTILE_PORT, HOSTILE_TA: when both are set, the zone hostile.test (below);
#   HOSTILE_TA is 64 hex chars, the SHA-256 of a CA's SPKI.
#
# Output in DIR:
#   env               AUTH_NS=<base>.1:53        NSD, authoritative for all zones
#                     RESOLVER_NS=<base>.2:53    unbound, iterating, NOT validating,
#                                                qname-minimisation on
#                     VALIDATING_NS=<base>.3:53  unbound, iterating and validating
#                     TRUST_ANCHOR=DIR/trust-anchor.key
#                     DELV_ANCHOR=DIR/delv-anchor.conf  (for `delv -a`)
#   trust-anchor.key  the root KSK as a DNSKEY record (BIND .key format)
#   delv-anchor.conf  the same key as a `trust-anchors { }` clause
#   root.ds           the root KSK as a DS record (unbound's anchor)
#   log/              daemon logs (and the output of any failed keygen/sign step)
#   zones/            zone files; zones/flip.test.signed is what NSD serves,
#                     flip.test.signed.good and .bad what fix and break copy there
#
# The resolvers: .2 returns whatever it gets (RRSIGs included when asked with
# DO; bogus data passes through). .3 answers secure data with AD, insecure
# without, and bogus with SERVFAIL plus an Extended DNS Error (it keeps a
# bogus answer 1 s, val-bogus-ttl, so flip.test changes show). Behind both,
# cname.test's TLSA answer carries an NSEC3 record in the authority section
# (from a qname-minimised lookup): the case that makes hickory 0.26 call a
# valid CNAME answer bogus.
#
# Zones. The root `.` is signed with RSASHA256 (2048-bit KSK and ZSK, NSEC). `test.` is signed with
# ECDSAP256SHA256 and NSEC3 opt-out (no salt, 0 iterations), like most TLDs.
# Leaves are ECDSAP256SHA256 with NSEC3 (no opt-out) unless said otherwise;
# each leaf is delegated to ns.<leaf>. with glue. Every A is 127.0.0.1.
# "Like good" means the four SRV records (_xmpp-client, _xmpps-client,
# _xmpp-server, _xmpps-server -> C2S, C2S_TLS, S2S, S2S_TLS on xmpp.<zone>.),
# an A record for xmpp.<zone>. and TLSA 3 1 1 GOOD at _<port>._tcp.xmpp.<zone>.
# for the four ports.
#   good.test          secure, like good; also AAAA ::1 for xmpp.good.test and
#                      tlsa.good.test. TLSA 3 1 1 GOOD (a CNAME target)
#   wrong.test         secure, like good but TLSA 3 1 1 OTHER (mismatch)
#   rollover.test      secure, like good with TLSA OTHER and GOOD (current+next)
#   notlsa.test        secure, SRV + A, no TLSA (NSEC3 denial)
#   nsec.test          secure, SRV + A, no TLSA (signed with plain NSEC)
#   nosrv.test         secure, no SRV; apex A; TLSA GOOD at _C2S._tcp.nosrv.test.
#                      (fallback: clients use nosrv.test:5222, which has no TLSA)
#   nostarttls.test    secure, _xmpp-client -> NOSTARTTLS_PORT, TLSA GOOD there
#   down.test          secure, _xmpp-client -> DOWN_PORT, TLSA GOOD there
#   sixmitm.test       secure, _xmpps-client -> SIXMITM_PORT on xmpp.sixmitm.test.,
#                      which has A 127.0.0.1 and AAAA ::1, TLSA GOOD there (the
#                      test serves the good key on 127.0.0.1 and another on ::1);
#                      _xmpp-server -> EXITREFUSED_PORT there, TLSA GOOD (the
#                      Tor test's exits refuse that port on 127.0.0.1 and ::1)
#   dot.test           secure, _xmpp-client SRV target "." (no service);
#                      _xmpp-server -> S2S with TLSA GOOD; _xmpps-server
#                      -> port 0 (never probed), TLSA GOOD at _0._tcp
#   unsigned.test      insecure: unsigned, no DS (covered by test.'s opt-out),
#                      like good; also tlsa.unsigned.test. TLSA GOOD
#   expired.test       bogus: like good, all signatures expired in 2020
#   badsig.test        bogus: like good, RRSIG over _xmpp-client._tcp SRV corrupted
#   badds.test         bogus: like good, the DS in test. matches no DNSKEY
#   dsunsigned.test    bogus: like good, DS in test. but the zone is served unsigned
#   cname.test         secure, _xmpp-client -> C2S xmpp.cname.test.;
#                      _<C2S>._tcp.xmpp.cname.test. CNAME tlsa.good.test.
#   cnameinsecure.test secure zone, same but CNAME to tlsa.unsigned.test.
#   shared.test        secure, _xmpp-client -> C2S xmpp.good.test. (host and
#   lame.test          delegated (no DS) to $BASE.250, where nothing answers:
#                      the domain's DNS is down while the resolvers work
#                      TLSA live in good.test)
#   twozsk.test        secure, signed with two active ZSKs (every RRset has two
#                      RRSIGs); like good but no AAAA (AAAA xmpp.twozsk.test. is
#                      NODATA: NSEC3 + SOA, each with two RRSIGs)
#   twoalg.test        secure, signed with two algorithms (ECDSAP256SHA256 and
#                      ED25519, a KSK and a ZSK each; both DS in test.); like
#                      twozsk (no AAAA)
#   twoksk.test        secure, like twozsk (no AAAA) but with two KSKs, the DS
#                      of only one in test. (the next KSK waiting for its DS),
#                      and in test. also the DS of a KSK the zone does not
#                      publish (a pre-published next KSK, or a leftover)
#   bogusdirect.test   _xmpp-client -> C2S xmpp.bogusdirect.test. (secure, TLSA
#                      GOOD); _xmpps-client -> C2S_TLS, TLSA GOOD, but bogus:
#                      the RRSIG over that SRV is corrupted. No server SRVs
#   longcname.test     secure, _xmpp-client -> C2S xmpp.longcname.test.;
#                      _<C2S>._tcp.xmpp.longcname.test. CNAME c1, c1 CNAME c2, ..
#                      c8 CNAME tlsa.good.test.: 9 signed CNAME links
#   toolongcname.test  the same with 40 links (t1 .. t39, then tlsa.good.test.)
#   edit.test          secure, like good but TLSA OTHER (TTL 300 s); `edit`
#                      serves it with TLSA GOOD, `unedit` with OTHER again
#   many.test          secure, 4 SRV per service to m1..m12.many.test. (each A
#                      127.0.0.1 and AAAA ::1): 96 endpoints; the odd targets on
#                      TARPIT_PORT (the test holds connections open silently
#                      there), the even ones on the service's port; TLSA GOOD
#                      at every target:port
#   aliasfb.test       secure, no SRV; chat.aliasfb.test. CNAME host.aliasfb.test.,
#                      host A; TLSA GOOD at _5222._tcp.host.aliasfb.test. (the
#                      expanded name, RFC 7671 section 7), TLSA OTHER at
#                      _5222._tcp.chat.aliasfb.test. Check chat.aliasfb.test.
#   hostile.test       (only with HOSTILE_PORT and HOSTILE_TA) secure,
#                      _xmpps-client -> HOSTILE_PORT on xmpp.hostile.test.,
#                      A 127.0.0.1, TLSA 2 1 1 HOSTILE_TA there (DANE-TA: the
#                      test's server presents a leaf whose names carry markup,
#                      so the name check fails with them in the report)
#   shortsig.test      secure, signed with short validity (dnssec-signzone -e
#                      now+172800: 2 days), every TTL 30 s; _xmpps-client ->
#                      HORIZON_PORT on xmpp.shortsig.test., A 127.0.0.1, TLSA
#                      3 1 1 GOOD there (the test serves the GOOD key there);
#                      no other SRV, no apex address. `resign` re-signs it
#   skew.test          the same records (TTL 300 s), signed with inception an
#                      hour in the future (-s +3600, the signer's clock runs
#                      ahead): bogus until then for validators without skew
#                      allowance (hickory; unbound allows some skew)
#   soon.test          secure, _xmpps-client -> SOON_PORT on xmpp.soon.test.,
#                      A 127.0.0.1, TLSA 3 1 1 GOOD there (the test serves the
#                      GOOD key there in a certificate that expires in 2 days);
#                      with SOON_TA also _xmpps-server -> SOON_TA_PORT there,
#                      TLSA 2 1 1 SOON_TA (DANE-TA: a CA's SPKI SHA-256)
#   roll.test          secure, every TTL 30 s: _xmpp-client -> C2S on
#                      xmpp.roll.test., A 127.0.0.1, TLSA 3 1 1 GOOD and
#                      3 1 1 OTHER there (current + next); `roll` serves it
#                      with GOOD only, both, or OTHER only
#   rush.test          the same, served with GOOD only at start
#   flip.test          secure, like good (no AAAA) with every TTL 1 s (records,
#                      DNSKEY, RRSIGs, NSEC3, SOA minimum; NSEC3PARAM has 0 as
#                      in every bind-signed zone): `break` and
#                      `fix` turn its C2S TLSA bogus and back under a running
#                      checker
set -euo pipefail

die() { echo "dnslab.sh: $*" >&2; exit 1; }

usage() { die "usage: dnslab.sh start|stop|break|fix|edit|unedit DIR, dnslab.sh resign DIR ZONE END [START], or dnslab.sh roll DIR ZONE one|both|next"; }

# One DNS query that gives up quickly (loopback only: always an explicit @server).
q() { dig +time=1 +tries=1 "$@"; }

verb=${1:-}
if [ "$verb" = resign ]; then
  [ $# -eq 4 ] || [ $# -eq 5 ] || usage
elif [ "$verb" = roll ]; then
  [ $# -eq 4 ] || usage
else
  [ $# -eq 2 ] || usage
fi
[ -n "$2" ] || usage
case "$2" in /*) DIR=$2 ;; *) DIR=$PWD/$2 ;; esac
DIR=${DIR%/}
[ -n "$DIR" ] || die "refusing to use / as the lab directory"
# Paths go into daemon configs unquoted-safe: keep them boring.
[[ "$DIR" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "lab directory has unusual characters: $DIR"

BASE=${DNSLAB_ADDR_BASE:-127.53.0}
AUTH_IP=$BASE.1
RES_IP=$BASE.2
VAL_IP=$BASE.3
TIMEOUT=${DNSLAB_TIMEOUT:-10}
DAEMONS="nsd unbound-resolver unbound-validating"
MARK=.dnslab

# Is the process in pid file $1 one we started from this DIR?
ours() {
  local pid cmd
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *" -c $DIR/"*.conf* ]] || return 1
  echo "$pid"
}

# Is process $1 running? (An exited daemon is a zombie until pid 1 reaps it,
# which can take seconds; kill -0 alone would count it as alive.)
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  case ${stat%% *} in Z | X | x | "") return 1 ;; esac
}

# Process $1 and all its descendants (NSD forks workers), from /proc.
tree() {
  local f line rest
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    rest=${line##*) }
    rest=${rest#* }
    echo "${line%% *} ${rest%% *}"
  done | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      for (p in parent) {
        q = p
        while (q != root && (q in parent) && parent[q] != q) q = parent[q]
        if (q == root) print p
      }
    }'
}

stop_daemons() {
  local name pidfile pid pids p left i
  for name in $DAEMONS; do
    pidfile=$DIR/$name.pid
    [ -e "$pidfile" ] || continue
    if pid=$(ours "$pidfile"); then
      pids=$(tree "$pid")
      kill -TERM "$pid" 2>/dev/null || true
      # Wait (5 s at most) for the daemon and its workers: the addresses
      # must be free when this returns.
      for ((i = 0; i < 100; i++)); do
        left=""
        for p in $pids; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] && break
        sleep 0.05
      done
      if [ -n "$left" ]; then
        echo "dnslab.sh: $name (pids$left) still running 5 s after SIGTERM; sending SIGKILL" >&2
        for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
      fi
    fi
    rm -f "$pidfile"
  done
}

if [ "$verb" = stop ]; then
  [ -d "$DIR" ] || exit 0
  stop_daemons
  exit 0
fi

# sigs OWNER TYPE < zone text or dig output: the signatures (base64, one a
# line, sorted) of the RRSIGs over OWNER/TYPE. Both `dnssec-signzone -O full`
# and dig print an RRSIG as: owner ttl class RRSIG type alg labels origttl
# expiration inception keytag signer signature-in-chunks...
sigs() {
  awk -v owner="$1" -v type="$2" '
    $1 == owner && $4 == "RRSIG" && $5 == type {
      sig = ""
      for (i = 13; i <= NF; i++) sig = sig $i
      print sig
    }' | sort
}

# flip ZONE VARIANT: serve DIR/zones/ZONE.test.signed.VARIANT (flip: good or
# bad; edit: old or new), make NSD reload, and wait until it answers with
# that file's signature over the TLSA.
flip() {
  local zone=$1
  shift
  local src=$DIR/zones/$zone.test.signed.$1 served=$DIR/zones/$zone.test.signed
  local owner auth pid want got="" deadline
  [ -e "$DIR/$MARK" ] || die "$DIR is not a lab directory"
  [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "DNSLAB_TIMEOUT must be whole seconds"
  [ -f "$src" ] && [ -f "$DIR/zones/$zone.test.owner" ] \
    || die "no $src (not started, or by an older dnslab.sh?)"
  owner=$(cat "$DIR/zones/$zone.test.owner")
  # The address the lab was started with (not this environment's base).
  auth=$(sed -n 's/^AUTH_NS=\(127\.[0-9.]*\):53$/\1/p' "$DIR/env" 2>/dev/null) || true
  [ -n "$auth" ] || die "no AUTH_NS in $DIR/env (lab not started?)"
  pid=$(ours "$DIR/nsd.pid") || die "the NSD of $DIR is not running"
  want=$(sigs "$owner" TLSA <"$src")
  [ -n "$want" ] || die "no RRSIG over $owner TLSA in $src"
  # A fresh copy gets a fresh mtime: NSD rereads only files whose mtime changed.
  cp "$src" "$served.tmp"
  mv -f "$served.tmp" "$served"
  kill -HUP "$pid" || die "could not signal NSD (pid $pid)"
  deadline=$((SECONDS + TIMEOUT))
  while :; do
    got=$(q @"$auth" +norec +dnssec +noall +answer "$owner" TLSA 2>/dev/null | sigs "$owner" TLSA) || true
    [ "$got" = "$want" ] && return 0
    alive "$pid" || die "NSD (pid $pid) exited while reloading $zone.test; see $DIR/log/nsd.log"
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dnslab.sh: NSD on $auth still does not serve the $1 $zone.test after ${TIMEOUT}s" >&2
      echo "  want RRSIG over $owner TLSA: $want" >&2
      echo "  got: ${got:-(none)}" >&2
      tail -n 5 "$DIR/log/nsd.log" 2>/dev/null | sed 's/^/  /' >&2
      exit 1
    fi
    sleep 0.05
  done
}

# resign ZONE END [START]: sign ZONE.test again into ZONE.test.signed.resigned
# and serve that.
resign() {
  local zone=$1 end=$2 start=${3:-}
  local opts=(-3 - -H 0 -P -e "$end")
  case " shortsig skew soon " in *" $zone "*) ;; *) die "resign: ZONE must be shortsig, skew or soon, got '$zone'" ;; esac
  [[ "$end" =~ ^(now\+|\+)?[0-9]+$ ]] || die "resign: END must be now+SECONDS, +SECONDS or YYYYMMDDHHMMSS, got '$end'"
  if [ -n "$start" ]; then
    [[ "$start" =~ ^\+?[0-9]+$ ]] || die "resign: START must be +SECONDS or YYYYMMDDHHMMSS, got '$start'"
    opts+=(-s "$start")
  fi
  [ -e "$DIR/$MARK" ] || die "$DIR is not a lab directory"
  [ -f "$DIR/zones/$zone.test.zone" ] || die "no $DIR/zones/$zone.test.zone (not started, or by an older dnslab.sh?)"
  dnssec-signzone -S -K "$DIR/keys" -d "$DIR/dsset" -O full -N keep "${opts[@]}" -o "$zone.test." \
    -f "$DIR/zones/$zone.test.signed.resigned" "$DIR/zones/$zone.test.zone" \
    >"$DIR/log/resign.log" 2>&1 || { cat "$DIR/log/resign.log" >&2; die "could not re-sign $zone.test"; }
  flip "$zone" resigned
}

case $verb in
  resign) resign "$3" "$4" "${5:-}"; exit 0 ;;
  roll)
    case "$3 $4" in roll\ one | roll\ both | roll\ next | rush\ one | rush\ both | rush\ next) ;; *) usage ;; esac
    flip "$3" "$4"
    exit 0
    ;;
  break) flip flip bad; exit 0 ;;
  fix) flip flip good; exit 0 ;;
  edit) flip edit new; exit 0 ;;
  unedit) flip edit old; exit 0 ;;
  start) ;;
  *) usage ;;
esac

# ---------------------------------------------------------------- inputs
C2S=${C2S_PORT:-15222}
C2S_TLS=${C2S_TLS_PORT:-15223}
S2S=${S2S_PORT:-15269}
S2S_TLS=${S2S_TLS_PORT:-15270}
DOWN=${DOWN_PORT:-15999}
NOSTARTTLS=${NOSTARTTLS_PORT:-15998}
SIXMITM=${SIXMITM_PORT:-15996}
EXITREFUSED=${EXITREFUSED_PORT:-15995}
TARPIT=${TARPIT_PORT:-15994}
HORIZON=${HORIZON_PORT:-15993}
SOON=${SOON_PORT:-15992}
SOON_TA_P=${SOON_TA_PORT:-15991}
SOON_TA=${SOON_TA:-}
# The port clients fall back to without SRV records (RFC 6120): fixed.
FALLBACK=5222
for v in C2S C2S_TLS S2S S2S_TLS DOWN NOSTARTTLS SIXMITM EXITREFUSED HORIZON SOON SOON_TA_P; do
  if ! [[ "${!v}" =~ ^[1-9][0-9]{0,4}$ ]] || [ "${!v}" -gt 65535 ]; then
    die "${v}_PORT must be a port number, got '${!v}'"
  fi
done
GOOD=${GOOD_SPKI:-}
OTHER=${OTHER_SPKI:-}
[[ "$GOOD" =~ ^[0-9a-fA-F]{64}$ ]] || die "GOOD_SPKI must be 64 hex characters, got '$GOOD'"
[[ "$OTHER" =~ ^[0-9a-fA-F]{64}$ ]] || die "OTHER_SPKI must be 64 hex characters, got '$OTHER'"
GOOD=${GOOD,,}
OTHER=${OTHER,,}
if [ -n "$SOON_TA" ]; then
  [[ "$SOON_TA" =~ ^[0-9a-fA-F]{64}$ ]] || die "SOON_TA must be 64 hex characters, got '$SOON_TA'"
  SOON_TA=${SOON_TA,,}
fi
[[ "$BASE" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] \
  || die "DNSLAB_ADDR_BASE must be three octets inside 127.0.0.0/8, like 127.53.0; got '$BASE'"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "DNSLAB_TIMEOUT must be whole seconds"
for tool in nsd unbound dnssec-keygen dnssec-signzone dnssec-dsfromkey dig; do
  command -v "$tool" >/dev/null || die "$tool not found (install nsd unbound bind9-utils bind9-dnsutils)"
done

# ---------------------------------------------------------------- fresh DIR
if [ -d "$DIR" ]; then
  if [ -e "$DIR/$MARK" ]; then
    stop_daemons
  elif [ -n "$(ls -A "$DIR")" ]; then
    die "$DIR is not empty and not a lab directory; refusing to wipe it"
  fi
  find "$DIR" -mindepth 1 -delete
fi

# Nothing may answer on our addresses yet (say, a lab left running elsewhere).
for ip in "$AUTH_IP" "$RES_IP" "$VAL_IP"; do
  if q @"$ip" +norec . SOA >/dev/null 2>&1; then
    die "something already answers DNS on $ip:53 (another lab still running? stop it, or set DNSLAB_ADDR_BASE)"
  fi
done

mkdir -p "$DIR"
touch "$DIR/$MARK"
mkdir -p "$DIR/keys" "$DIR/spare" "$DIR/zones" "$DIR/log" "$DIR/dsset" "$DIR/ds" "$DIR/nsd-state"

# From here on, a failure stops whatever was started.
started=0
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$started" = 1 ]; then
    stop_daemons
  fi
  exit "$rc"
}
trap on_exit EXIT

# Background jobs whose output is shown only when they fail.
jobs_pids=()
jobs_names=()
spawn() { # spawn NAME CMD...
  local name=$1
  shift
  "$@" >"$DIR/log/$name.log" 2>&1 &
  jobs_pids+=($!)
  jobs_names+=("$name")
}
wait_bg() { # wait_bg [SKIP-PREFIX]: wait for all jobs but those named SKIP-PREFIX*
  local i failed=0 skip=${1:-} done_logs=() left_pids=() left_names=()
  for i in "${!jobs_pids[@]}"; do
    if [ -n "$skip" ] && [[ "${jobs_names[$i]}" == "$skip"* ]]; then
      left_pids+=("${jobs_pids[$i]}")
      left_names+=("${jobs_names[$i]}")
      continue
    fi
    if ! wait "${jobs_pids[$i]}"; then
      echo "dnslab.sh: ${jobs_names[$i]} failed:" >&2
      sed 's/^/  /' "$DIR/log/${jobs_names[$i]}.log" >&2
      failed=1
    fi
    done_logs+=("$DIR/log/${jobs_names[$i]}.log")
  done
  [ "$failed" = 0 ] || exit 1
  rm -f "${done_logs[@]}"
  jobs_pids=("${left_pids[@]}")
  jobs_names=("${left_names[@]}")
}

# ---------------------------------------------------------------- zones
SIGNED="good wrong rollover notlsa nsec nosrv nostarttls down dot expired badsig badds cname cnameinsecure shared"
SIGNED="$SIGNED twozsk twoalg twoksk bogusdirect longcname toolongcname aliasfb flip sixmitm many edit"
SIGNED="$SIGNED shortsig skew soon roll rush"
# BENCH_DOMAINS=N adds bench.test with N domains dI.bench.test, each with an
# _xmpp-client SRV (the benchmark's workload): to xmpp.good.test when
# BENCH_HOSTS=0, else to host hJ.bench.test, J = I mod BENCH_HOSTS, which has
# one A record BENCH_HOST_BASE.(J mod BENCH_HOST_ADDRS + 1), its own port
# C2S_PORT + J div BENCH_HOST_ADDRS (so every host is its own address:port)
# and a TLSA 3 1 1 GOOD there.
BENCH=${BENCH_DOMAINS:-0}
[[ $BENCH =~ ^[0-9]+$ ]] || die "BENCH_DOMAINS must be a number"
BENCH_HOSTS=${BENCH_HOSTS:-0}
BENCH_HOST_BASE=${BENCH_HOST_BASE:-127.57.0}
BENCH_HOST_ADDRS=${BENCH_HOST_ADDRS:-8}
[[ $BENCH_HOSTS =~ ^[0-9]+$ ]] || die "BENCH_HOSTS must be a number"
[[ $BENCH_HOST_ADDRS =~ ^[1-9][0-9]*$ ]] && [ "$BENCH_HOST_ADDRS" -le 254 ] \
  || die "BENCH_HOST_ADDRS must be 1..254"
[[ "$BENCH_HOST_BASE" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] \
  || die "BENCH_HOST_BASE must be three octets inside 127.0.0.0/8; got '$BENCH_HOST_BASE'"
[ $((C2S + (BENCH_HOSTS + BENCH_HOST_ADDRS - 1) / BENCH_HOST_ADDRS)) -le 65535 ] \
  || die "BENCH_HOSTS / BENCH_HOST_ADDRS ports past 65535"
[ "$BENCH" -gt 0 ] && SIGNED="$SIGNED bench"
HOSTILE=${HOSTILE_PORT:-}
HOSTILE_TA=${HOSTILE_TA:-}
if [ -n "$HOSTILE$HOSTILE_TA" ]; then
  { [[ "$HOSTILE" =~ ^[1-9][0-9]{0,4}$ ]] && [ "$HOSTILE" -le 65535 ]; } \
    || die "HOSTILE_PORT must be a port number, got '$HOSTILE'"
  [[ "$HOSTILE_TA" =~ ^[0-9a-fA-F]{64}$ ]] || die "HOSTILE_TA must be 64 hex characters"
  SIGNED="$SIGNED hostile"
fi
UNSIGNED="unsigned dsunsigned"
LEAVES="$SIGNED $UNSIGNED"

# ---------------------------------------------------------------- keys
ecdsa() { dnssec-keygen -q -K "$1" -a ECDSAP256SHA256 -n ZONE "${@:2}"; }
spawn key-root-ksk dnssec-keygen -q -K "$DIR/keys" -a RSASHA256 -b 2048 -n ZONE -f KSK .
spawn key-root-zsk dnssec-keygen -q -K "$DIR/keys" -a RSASHA256 -b 2048 -n ZONE .
spawn key-test-ksk ecdsa "$DIR/keys" -f KSK test
spawn key-test-zsk ecdsa "$DIR/keys" test
for z in $SIGNED; do
  spawn "key-$z-ksk" ecdsa "$DIR/keys" -f KSK "$z.test"
  spawn "key-$z-zsk" ecdsa "$DIR/keys" "$z.test"
done
# twozsk.test: a second active ZSK. twoalg.test: a second algorithm.
spawn key-twozsk-zsk2 ecdsa "$DIR/keys" twozsk.test
ed25519() { dnssec-keygen -q -K "$1" -a ED25519 -n ZONE "${@:2}"; }
spawn key-twoalg-ksk2 ed25519 "$DIR/keys" -f KSK twoalg.test
spawn key-twoalg-zsk2 ed25519 "$DIR/keys" twoalg.test
# twoksk.test: a second KSK (no DS for it), and one it never publishes.
spawn key-twoksk-ksk2 ecdsa "$DIR/keys" -f KSK twoksk.test
spawn key-twoksk-stray ecdsa "$DIR/spare" -f KSK twoksk.test
# A key the badds.test zone never publishes, and the key dsunsigned.test
# would have used had it been signed: their DS go into test.
spawn key-badds-stray ecdsa "$DIR/spare" -f KSK badds.test
spawn key-dsunsigned ecdsa "$DIR/spare" -f KSK dsunsigned.test
# (The zone texts below are written while the keys are generated.)

# ksk KEYDIR ZONE: the .key file of the zone's KSK.
ksk() {
  local f
  for f in "$1/K${2%.}.+"*.key; do
    if grep -q "DNSKEY 257 " "$f"; then echo "$f"; return; fi
  done
  die "no KSK for $2 in $1"
}
# ds_to OUT KEYFILE: the key's DS record (SHA-256) into OUT.
ds_to() { dnssec-dsfromkey -2 "$2" >"$1"; }

soa_ns() { # soa_ns ZONE NSNAME [TTL]: TTL (default 300) is $TTL and the SOA minimum
  local ttl=${3:-300}
  cat <<EOF
\$TTL $ttl
$1 IN SOA $2 hostmaster.${1#.} 1 3600 600 86400 $ttl
$1 IN NS $2
EOF
}

# like_good ZONE TLSA-RDATA...: the four SRV, xmpp A, TLSA on the four ports.
like_good() {
  local z=$1 p r
  shift
  cat <<EOF
_xmpp-client._tcp.$z IN SRV 0 5 $C2S xmpp.$z
_xmpps-client._tcp.$z IN SRV 0 5 $C2S_TLS xmpp.$z
_xmpp-server._tcp.$z IN SRV 0 5 $S2S xmpp.$z
_xmpps-server._tcp.$z IN SRV 0 5 $S2S_TLS xmpp.$z
xmpp.$z IN A 127.0.0.1
EOF
  for p in "$C2S" "$C2S_TLS" "$S2S" "$S2S_TLS"; do
    for r in "$@"; do
      echo "_$p._tcp.xmpp.$z IN TLSA $r"
    done
  done
}

leaf() { # leaf NAME: the unsigned zone text of NAME.test.
  local z=$1.test. ttl=300
  [ "$1" = flip ] && ttl=1
  # The key cache keeps a DNSKEY answer 30 s at least: a re-signed
  # shortsig.test shows everywhere within 30 s.
  [ "$1" = shortsig ] && ttl=30
  # roll and rush: a TLSA change shows within 30 s, and a key switched
  # within 30 s of it is "too early".
  case $1 in roll | rush) ttl=30 ;; esac
  soa_ns "$z" "ns.$z" "$ttl"
  echo "ns.$z IN A $AUTH_IP"
  case $1 in
    good)
      like_good "$z" "3 1 1 $GOOD"
      echo "xmpp.$z IN AAAA ::1"
      echo "tlsa.$z IN TLSA 3 1 1 $GOOD"
      ;;
    wrong) like_good "$z" "3 1 1 $OTHER" ;;
    rollover) like_good "$z" "3 1 1 $OTHER" "3 1 1 $GOOD" ;;
    notlsa | nsec) like_good "$z" ;;
    nosrv)
      echo "$z IN A 127.0.0.1"
      echo "_$C2S._tcp.$z IN TLSA 3 1 1 $GOOD"
      ;;
    nostarttls | down)
      local port=$NOSTARTTLS
      [ "$1" = down ] && port=$DOWN
      echo "_xmpp-client._tcp.$z IN SRV 0 5 $port xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$port._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      ;;
    sixmitm)
      echo "_xmpps-client._tcp.$z IN SRV 0 5 $SIXMITM xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "xmpp.$z IN AAAA ::1"
      echo "_$SIXMITM._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      echo "_xmpp-server._tcp.$z IN SRV 0 5 $EXITREFUSED xmpp.$z"
      echo "_$EXITREFUSED._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      ;;
    dot)
      echo "_xmpp-client._tcp.$z IN SRV 0 0 0 ."
      echo "_xmpp-server._tcp.$z IN SRV 0 5 $S2S xmpp.$z"
      echo "_xmpps-server._tcp.$z IN SRV 0 5 0 xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$S2S._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      echo "_0._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      ;;
    unsigned)
      like_good "$z" "3 1 1 $GOOD"
      echo "tlsa.$z IN TLSA 3 1 1 $GOOD"
      ;;
    expired | badsig | badds | dsunsigned) like_good "$z" "3 1 1 $GOOD" ;;
    cname | cnameinsecure)
      local target=tlsa.good.test.
      [ "$1" = cnameinsecure ] && target=tlsa.unsigned.test.
      echo "_xmpp-client._tcp.$z IN SRV 0 5 $C2S xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$C2S._tcp.xmpp.$z IN CNAME $target"
      ;;
    shared) echo "_xmpp-client._tcp.$z IN SRV 0 5 $C2S xmpp.good.test." ;;
    bench)
      if [ "$BENCH_HOSTS" -eq 0 ]; then
        awk -v n="$BENCH" -v port="$C2S" -v z="$z" \
          'BEGIN { for (i = 0; i < n; i++) printf "_xmpp-client._tcp.d%d.%s IN SRV 0 5 %s xmpp.good.test.\n", i, z, port }'
      else
        awk -v n="$BENCH" -v h="$BENCH_HOSTS" -v a="$BENCH_HOST_ADDRS" -v base="$BENCH_HOST_BASE" \
          -v port="$C2S" -v z="$z" -v good="$GOOD" 'BEGIN {
            for (j = 0; j < h; j++) {
              p = port + int(j / a)
              printf "h%d.%s IN A %s.%d\n", j, z, base, j % a + 1
              printf "_%d._tcp.h%d.%s IN TLSA 3 1 1 %s\n", p, j, z, good
            }
            for (i = 0; i < n; i++) {
              j = i % h
              printf "_xmpp-client._tcp.d%d.%s IN SRV 0 5 %d h%d.%s\n", i, z, port + int(j / a), j, z
            }
          }'
      fi
      ;;
    twozsk | twoalg | twoksk | flip) like_good "$z" "3 1 1 $GOOD" ;;
    edit) like_good "$z" "3 1 1 $OTHER" ;;
    bogusdirect)
      echo "_xmpp-client._tcp.$z IN SRV 0 5 $C2S xmpp.$z"
      echo "_xmpps-client._tcp.$z IN SRV 0 5 $C2S_TLS xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$C2S._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      echo "_$C2S_TLS._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      ;;
    longcname | toolongcname)
      # N CNAME links: from the TLSA name through N-1 intermediate names,
      # the last one to tlsa.good.test.
      local n=9 p=c i from
      [ "$1" = toolongcname ] && n=40 p=t
      echo "_xmpp-client._tcp.$z IN SRV 0 5 $C2S xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      from=_$C2S._tcp.xmpp.$z
      for ((i = 1; i < n; i++)); do
        echo "$from IN CNAME $p$i.$z"
        from=$p$i.$z
      done
      echo "$from IN CNAME tlsa.good.test."
      ;;
    aliasfb)
      echo "chat.$z IN CNAME host.$z"
      echo "host.$z IN A 127.0.0.1"
      echo "_$FALLBACK._tcp.host.$z IN TLSA 3 1 1 $GOOD"
      echo "_$FALLBACK._tcp.chat.$z IN TLSA 3 1 1 $OTHER"
      ;;
    roll | rush)
      echo "_xmpp-client._tcp.$z IN SRV 0 5 $C2S xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$C2S._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      echo "_$C2S._tcp.xmpp.$z IN TLSA 3 1 1 $OTHER"
      ;;
    shortsig | skew)
      echo "_xmpps-client._tcp.$z IN SRV 0 5 $HORIZON xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$HORIZON._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      ;;
    soon)
      echo "_xmpps-client._tcp.$z IN SRV 0 5 $SOON xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$SOON._tcp.xmpp.$z IN TLSA 3 1 1 $GOOD"
      if [ -n "$SOON_TA" ]; then
        echo "_xmpps-server._tcp.$z IN SRV 0 5 $SOON_TA_P xmpp.$z"
        echo "_$SOON_TA_P._tcp.xmpp.$z IN TLSA 2 1 1 $SOON_TA"
      fi
      ;;
    hostile)
      echo "_xmpps-client._tcp.$z IN SRV 0 5 $HOSTILE xmpp.$z"
      echo "xmpp.$z IN A 127.0.0.1"
      echo "_$HOSTILE._tcp.xmpp.$z IN TLSA 2 1 1 ${HOSTILE_TA,,}"
      ;;
    many)
      # 4 services x 12 targets x (A + AAAA) = 96 endpoints; the odd
      # targets point at TARPIT_PORT, where the test holds connections open
      # without a word.
      local i port svc ports=("$C2S" "$C2S_TLS" "$S2S" "$S2S_TLS") k=0
      for svc in _xmpp-client _xmpps-client _xmpp-server _xmpps-server; do
        for ((i = 1; i <= 12; i++)); do
          port=${ports[$k]}
          ((i % 2)) && port=$TARPIT
          echo "$svc._tcp.$z IN SRV 0 5 $port m$i.$z"
          echo "_$port._tcp.m$i.$z IN TLSA 3 1 1 $GOOD"
        done
        k=$((k + 1))
      done
      for ((i = 1; i <= 12; i++)); do
        echo "m$i.$z IN A 127.0.0.1"
        echo "m$i.$z IN AAAA ::1"
      done
      ;;
    *) die "unknown zone $1" ;;
  esac
}

for z in $LEAVES; do
  leaf "$z" >"$DIR/zones/$z.test.zone"
done
# edit.test after the admin's fix: TLSA GOOD where it was OTHER.
leaf edit | sed "s/TLSA 3 1 1 $OTHER/TLSA 3 1 1 $GOOD/" >"$DIR/zones/edit.test.new.zone"
# roll and rush with one record: GOOD only (one), OTHER only (next).
for z in roll rush; do
  leaf "$z" | grep -v "TLSA 3 1 1 $OTHER\$" >"$DIR/zones/$z.test.one.zone"
  leaf "$z" | grep -v "TLSA 3 1 1 $GOOD\$" >"$DIR/zones/$z.test.next.zone"
done
# The root's RSA keys take longest: the leaves are signed meanwhile.
wait_bg key-root-

# ---------------------------------------------------------------- signing
sign() { # sign FILE-STEM ORIGIN [dnssec-signzone options]
  local stem=$1 origin=$2
  shift 2
  dnssec-signzone -S -K "$DIR/keys" -d "$DIR/dsset" -O full -N keep "$@" \
    -o "$origin" -f "$DIR/zones/$stem.signed" "$DIR/zones/$stem.zone"
}
NSEC3=(-3 - -H 0)
# The leaves first: signing writes each leaf's DS records (SHA-256, one per
# KSK) to DIR/dsset/dsset-ZONE., which go into test. The few other DS records
# are computed meanwhile. Then test. and the root.
for z in $SIGNED; do
  case $z in
    nsec) spawn "sign-$z" sign "$z.test" "$z.test." ;;
    expired) spawn "sign-$z" sign "$z.test" "$z.test." "${NSEC3[@]}" -P -s 20200101000000 -e 20200201000000 ;;
    shortsig) spawn "sign-$z" sign "$z.test" "$z.test." "${NSEC3[@]}" -e now+172800 ;;
    skew) spawn "sign-$z" sign "$z.test" "$z.test." "${NSEC3[@]}" -P -s +3600 ;;
    *) spawn "sign-$z" sign "$z.test" "$z.test." "${NSEC3[@]}" ;;
  esac
done
spawn sign-edit-new sign "edit.test.new" "edit.test." "${NSEC3[@]}"
for z in roll rush; do
  for v in one next; do
    spawn "sign-$z-$v" sign "$z.test.$v" "$z.test." "${NSEC3[@]}"
  done
done
spawn ds-badds-stray ds_to "$DIR/ds/badds-stray.ds" "$(ksk "$DIR/spare" badds.test)"
spawn ds-twoksk-stray ds_to "$DIR/ds/twoksk-stray.ds" "$(ksk "$DIR/spare" twoksk.test)"
spawn ds-dsunsigned ds_to "$DIR/ds/dsunsigned.ds" "$(ksk "$DIR/spare" dsunsigned.test)"
spawn ds-test ds_to "$DIR/ds/test.ds" "$(ksk "$DIR/keys" test)"
wait_bg

{
  soa_ns test. ns.test.
  echo "ns.test. IN A $AUTH_IP"
  # lame.test: delegated (unsigned) to a server that does not exist, so its
  # lookups fail through the resolvers while the rest of the lab answers.
  echo "lame.test. IN NS ns.lame.test."
  echo "ns.lame.test. IN A $BASE.250"
  for z in $LEAVES; do
    echo "$z.test. IN NS ns.$z.test."
    echo "ns.$z.test. IN A $AUTH_IP"
  done
  for z in $SIGNED; do
    [ "$z" = badds ] && continue
    mapfile -t dsl <"$DIR/dsset/dsset-$z.test." # one a KSK (twoalg.test has two)
    [ "${#dsl[@]}" -gt 0 ] || die "no DS records for $z.test from dnssec-signzone"
    [ "$z" = twoksk ] && { [ "${#dsl[@]}" = 2 ] || die "twoksk.test: expected 2 DS records"; dsl=("${dsl[0]}"); }
    printf '%s\n' "${dsl[@]}"
  done
  cat "$DIR/ds/badds-stray.ds" "$DIR/ds/dsunsigned.ds" "$DIR/ds/twoksk-stray.ds"
} >"$DIR/zones/test.zone"

{
  soa_ns . ns.test.
  echo "test. IN NS ns.test."
  echo "ns.test. IN A $AUTH_IP"
  cat "$DIR/ds/test.ds"
} >"$DIR/zones/root.zone"

spawn sign-root sign root .
spawn sign-test sign test test. "${NSEC3[@]}" -A
spawn ds-root ds_to "$DIR/root.ds" "$(ksk "$DIR/keys" .)"
wait_bg

# corrupt_sig IN OUT OWNER TYPE: copy the signed zone file IN to OUT with every
# RRSIG over OWNER/TYPE corrupted: four base64 characters near the start of
# the signature change (the length and encoding stay valid). IN may be OUT.
corrupt_sig() {
  awk -v owner="$3" -v type="$4" '
    $1 == owner && $4 == "RRSIG" && $5 == type {
      sig = $13    # the first base64 chunk of the signature
      out = substr(sig, 1, 8)
      for (i = 9; i <= 12; i++) {
        c = substr(sig, i, 1)
        out = out (c == "A" ? "B" : "A")
      }
      $13 = out substr(sig, 13)
      n++
    }
    { print }
    END { if (n == 0) { print "no RRSIG over " owner " " type > "/dev/stderr"; exit 1 } }
  ' "$1" >"$2.tmp" || die "could not corrupt the RRSIG over $3 $4 in $1"
  mv "$2.tmp" "$2"
}
Z=$DIR/zones
corrupt_sig "$Z/badsig.test.signed" "$Z/badsig.test.signed" _xmpp-client._tcp.badsig.test. SRV
corrupt_sig "$Z/bogusdirect.test.signed" "$Z/bogusdirect.test.signed" _xmpps-client._tcp.bogusdirect.test. SRV
# flip.test: NSD serves flip.test.signed, a copy of .good or .bad (see flip()).
echo "_$C2S._tcp.xmpp.flip.test." >"$Z/flip.test.owner"
cp "$Z/flip.test.signed" "$Z/flip.test.signed.good"
corrupt_sig "$Z/flip.test.signed" "$Z/flip.test.signed.bad" "$(cat "$Z/flip.test.owner")" TLSA
# edit.test: NSD serves edit.test.signed, a copy of .old or .new (see flip()).
echo "_$C2S._tcp.xmpp.edit.test." >"$Z/edit.test.owner"
cp "$Z/edit.test.signed" "$Z/edit.test.signed.old"
cp "$Z/edit.test.new.signed" "$Z/edit.test.signed.new"
# shortsig, skew and soon: `resign` serves ZONE.test.signed.resigned (see flip()).
echo "_$HORIZON._tcp.xmpp.shortsig.test." >"$Z/shortsig.test.owner"
echo "_$HORIZON._tcp.xmpp.skew.test." >"$Z/skew.test.owner"
echo "_$SOON._tcp.xmpp.soon.test." >"$Z/soon.test.owner"
# roll and rush: `roll` serves ZONE.test.signed.{one,both,next}; rush starts with one.
for z in roll rush; do
  echo "_$C2S._tcp.xmpp.$z.test." >"$Z/$z.test.owner"
  cp "$Z/$z.test.signed" "$Z/$z.test.signed.both"
  cp "$Z/$z.test.one.signed" "$Z/$z.test.signed.one"
  cp "$Z/$z.test.next.signed" "$Z/$z.test.signed.next"
done
cp "$Z/rush.test.signed.one" "$Z/rush.test.signed"

# ---------------------------------------------------------------- anchors
root_ksk=$(ksk "$DIR/keys" .)
cp "$root_ksk" "$DIR/trust-anchor.key"
awk '$3 == "DNSKEY" {
  key = ""
  for (i = 7; i <= NF; i++) key = key $i
  printf "trust-anchors {\n  \".\" static-key %s %s %s \"%s\";\n};\n", $4, $5, $6, key
}' "$DIR/trust-anchor.key" >"$DIR/delv-anchor.conf"
grep -q static-key "$DIR/delv-anchor.conf" || die "could not write $DIR/delv-anchor.conf"

# ---------------------------------------------------------------- configs
{
  cat <<EOF
server:
  ip-address: $AUTH_IP
  port: 53
  do-ip4: yes
  do-ip6: no
  username: ""
  chroot: ""
  database: ""
  zonesdir: "$DIR/zones"
  zonelistfile: "$DIR/nsd-state/zone.list"
  xfrdfile: "$DIR/nsd-state/xfrd.state"
  xfrdir: "$DIR/nsd-state"
  cookie-secret-file: "$DIR/nsd-state/cookiesecrets.txt"
  pidfile: "$DIR/nsd.pid"
  logfile: "$DIR/log/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
  hide-identity: yes
  reuseport: no
  # No response rate limiting: it drops or truncates (TC, empty sections)
  # answers past 200 a second per class, e.g. all NXDOMAINs of a zone, and
  # the benchmark's thousands of domains would measure NSD's limiter.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "root.signed"
zone:
  name: "test."
  zonefile: "test.signed"
EOF
  for z in $LEAVES; do
    f=$z.test.signed
    case " $UNSIGNED " in *" $z "*) f=$z.test.zone ;; esac
    printf 'zone:\n  name: "%s.test."\n  zonefile: "%s"\n' "$z" "$f"
  done
} >"$DIR/nsd.conf"

printf '. 3600000 IN NS ns.test.\nns.test. 3600000 IN A %s\n' "$AUTH_IP" >"$DIR/root.hints"

unbound_conf() { # unbound_conf NAME IP validating(yes|no)
  cat <<EOF
server:
  interface: $2
  port: 53
  outgoing-interface: $2
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  access-control: 127.0.0.0/8 allow
  username: ""
  chroot: ""
  directory: "$DIR"
  pidfile: "$DIR/$1.pid"
  logfile: "$DIR/log/$1.log"
  use-syslog: no
  log-time-ascii: yes
  verbosity: 1
  num-threads: 1
  outgoing-range: 64
  num-queries-per-thread: 32
  so-reuseport: no
  msg-cache-size: 1m
  rrset-cache-size: 2m
  key-cache-size: 1m
  neg-cache-size: 1m
  root-hints: "$DIR/root.hints"
  do-not-query-localhost: no
  local-zone: "test." nodefault
  qname-minimisation: yes
  qname-minimisation-strict: no
  prefetch: no
  trust-anchor-signaling: no
  root-key-sentinel: no
  hide-version: yes
  hide-identity: yes
EOF
  if [ "$3" = yes ]; then
    cat <<EOF
  module-config: "validator iterator"
  trust-anchor-file: "$DIR/root.ds"
  val-log-level: 2
  ede: yes
  # Bogus answers are cached for val-bogus-ttl, not their own TTL (default
  # 60 s, also what +cd gets back): 1 s, so a fixed flip.test shows at once.
  val-bogus-ttl: 1
EOF
  else
    echo '  module-config: "iterator"'
  fi
  printf 'remote-control:\n  control-enable: no\n'
}
unbound_conf unbound-resolver "$RES_IP" no >"$DIR/unbound-resolver.conf"
unbound_conf unbound-validating "$VAL_IP" yes >"$DIR/unbound-validating.conf"

# ---------------------------------------------------------------- start
launch() { # launch NAME CMD...: run in the foreground mode, in the background
  local name=$1
  shift
  started=1
  "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

# wait_for NAME WHAT TEST-CMD...: poll until TEST-CMD succeeds.
wait_for() {
  local name=$1 what=$2 pid deadline
  shift 2
  pid=$(cat "$DIR/$name.pid")
  deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      echo "dnslab.sh: $name exited while starting ($what). Its log:" >&2
      tail -n 20 "$DIR/log/$name.log" "$DIR/log/$name.out" 2>/dev/null | sed 's/^/  /' >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dnslab.sh: $name not ready after ${TIMEOUT}s: $what. Its log:" >&2
      tail -n 20 "$DIR/log/$name.log" "$DIR/log/$name.out" 2>/dev/null | sed 's/^/  /' >&2
      exit 1
    fi
    sleep 0.05
  done
}

# NSD is ready when it answers with authority for the SOA of every zone.
ZONES=". test. $(for z in $LEAVES; do printf '%s.test. ' "$z"; done)"
nsd_ready() {
  local args=() z n
  for z in $ZONES; do args+=("$z" SOA); done
  n=$(q @"$AUTH_IP" +norec +noall +answer "${args[@]}" | awk '$4 == "SOA"' | wc -l)
  [ "$n" -eq "$(wc -w <<<"$ZONES")" ]
}
# unbound is ready when it resolves through the lab's root (with AD if validating).
resolver_ready() {
  q @"$RES_IP" +noall +answer _xmpp-client._tcp.good.test. SRV | grep -q "IN[[:space:]]*SRV"
}
validating_ready() {
  q @"$VAL_IP" +dnssec _xmpp-client._tcp.good.test. SRV | grep -q "^;; flags:.* ad"
}

launch nsd nsd -d -c "$DIR/nsd.conf"
wait_for nsd "authoritative answers for all $(wc -w <<<"$ZONES") zones on $AUTH_IP:53" nsd_ready
launch unbound-resolver unbound -d -c "$DIR/unbound-resolver.conf"
launch unbound-validating unbound -d -c "$DIR/unbound-validating.conf"
wait_for unbound-resolver "resolve good.test SRV on $RES_IP:53" resolver_ready
wait_for unbound-validating "a validated (AD) good.test SRV on $VAL_IP:53" validating_ready
for name in $DAEMONS; do
  alive "$(cat "$DIR/$name.pid")" || die "$name exited after answering; see $DIR/log/$name.log"
done

cat >"$DIR/env" <<EOF
AUTH_NS=$AUTH_IP:53
RESOLVER_NS=$RES_IP:53
VALIDATING_NS=$VAL_IP:53
TRUST_ANCHOR=$DIR/trust-anchor.key
DELV_ANCHOR=$DIR/delv-anchor.conf
EOF
