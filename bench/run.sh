#!/usr/bin/env bash
# bench/run.sh — proxy one route to one upstream with Isthmus, nginx and HAProxy
# in the same run, and compare throughput, latency, CPU per request and memory.
#
# Usage (from anywhere; run as root so missing tools can be installed):
#   bench/run.sh
#   PROXIES="direct nginx haproxy" DURATION=3 RUNS=1 bench/run.sh
#
# Knobs (environment variables):
#   DURATION     seconds of each measured wrk run                 (default 10)
#   RUNS         measured runs per proxy; the median is reported  (default 3)
#   PROXIES      which rows to run, in order, space separated
#                  (default "direct nginx haproxy isthmus isthmus-rich isthmus-logged")
#                  direct  = wrk straight to the backend (baseline, no proxy)
#                  nginx | haproxy | isthmus | isthmus-rich (the same
#                  route with a regex match and request/response header edits) |
#                  isthmus-logged (the plain route with the access log on, to a file) |
#                  isthmus-base (the plain route on ISTHMUS_BASE_BIN, e.g. a build of main)
#   CONNECTIONS  wrk connections kept open (closed loop)          (default 32)
#   WARMUP       seconds of the discarded warm-up run             (default 2)
#   ISTHMUS_BIN  Isthmus binary (built with `cargo build --release` if missing)
#                                                                 (default <repo>/target/release/isthmus)
#   ISTHMUS_BASE_BIN  another Isthmus binary for the isthmus-base row (never built)
#   BODY         > 0: every request is a POST with a body of this many bytes, written
#                with its head (wrk; oha with H2=1 or RATE)               (default 0: GET)
#   TLS          1: clients speak HTTPS (TLS 1.3, one ECDSA P-256 certificate for every
#                  proxy) and the proxies terminate it; upstreams stay plaintext (default 0)
#   NEW_CONN     1: every request on a new connection (Connection: close), so req/s with
#                  TLS=1 is full TLS handshakes per second                   (default 0)
#   OUT          if set, also write every run's raw numbers to this TSV file
#   KEEP_TMP     if 1, keep the temp dir (configs, logs, wrk output) and print its path
#   PROXY_CPU / LOAD_CPU   cores for the proxy / for wrk+backend  (default 1 / 0)
#   H2           1: clients speak HTTP/2 (h2c with prior knowledge, or ALPN h2 with TLS=1),
#                  CONNECTIONS connections with STREAMS requests in flight on each; the
#                  load generator is oha instead of wrk                    (default 0)
#   STREAMS      HTTP/2 requests in flight per connection with H2=1       (default 8)
#   RATE         if > 0, an OPEN-LOOP load at this many requests/s in total (oha -q, with
#                  latency correction), so p50/p99 are latencies at a fixed rate below
#                  saturation rather than closed-loop queueing             (default 0)
#   IDLE_CONNS   if > 0, before the load of each run hold this many idle keep-alive
#                  connections (one request each) and report the proxy's RSS per
#                  idle connection in a second table, quiet and after one second of
#                  traffic on one other connection (live); RSS is counted from after
#                  one second of traffic on 100 connections, which fills every
#                  proxy's upstream keep-alive pool first                   (default 0)
#   IDLE_HOLD    seconds the idle connections stay quiet, once all are open,
#                  before RSS is read: what an idle connection holds, not
#                  what it held while busy (Isthmus parks after 1 s)     (default 3)
#
# Layout on a 2-core machine: the proxy alone on core 1; wrk and the backend
# (a separate nginx answering 200 "ok\n") share core 0. Every proxy gets one
# worker thread. Loads are strictly serialised, and runs are interleaved
# (run 1 of every proxy, then run 2 of every proxy, ...) so slow drift on the
# machine is spread over all proxies instead of landing on one.
set -euo pipefail

# ---------------------------------------------------------------- settings
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
PROXIES=${PROXIES:-"direct nginx haproxy isthmus isthmus-rich isthmus-logged"}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
ISTHMUS_BIN=${ISTHMUS_BIN:-$ROOT/target/release/isthmus}
ISTHMUS_BASE_BIN=${ISTHMUS_BASE_BIN:-}
OUT=${OUT:-}
TLS=${TLS:-0}
NEW_CONN=${NEW_CONN:-0}
SCHEME=http
[[ $TLS == 1 ]] && SCHEME=https
KEEP_TMP=${KEEP_TMP:-0}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
IDLE_CONNS=${IDLE_CONNS:-0}
IDLE_HOLD=${IDLE_HOLD:-3}
H2=${H2:-0}
STREAMS=${STREAMS:-8}
RATE=${RATE:-0}
BODY=${BODY:-0}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
# Connection limits of every proxy: room for the idle connections and the load.
MAX_CONNS=$((IDLE_CONNS + 4096))

HOST_HEADER="bench.example.com"
BACKEND_PORT=18080
NGINX_PORT=18010
HAPROXY_PORT=18020
ISTHMUS_PORT=18000
ISTHMUS_ADMIN_PORT=18001
READY_TIMEOUT=10 # seconds a server gets to start answering
# A command every proxy runs under (its arguments first), e.g. valgrind: bench/instructions.sh.
WRAP=()

CLK_TCK=$(getconf CLK_TCK) # unit of utime/stime in /proc/<pid>/stat

WORK=""           # mktemp -d, set in main
RESULTS=""        # per-run TSV inside $WORK
STARTED_PIDS=()   # every server this script started, for the exit trap
BACKEND_PID=""
WRK_PID=""        # the running load, if any
IDLE_NOTE=""

# ---------------------------------------------------------------- helpers
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

has_proxy() { [[ " $PROXIES " == *" $1 "* ]]; }

# Make sure the tools exist; install the missing ones with apt when root.
ensure_tools() {
    local -A pkg_of=([nginx]=nginx-light [haproxy]=haproxy [wrk]=wrk [curl]=curl
                     [taskset]=util-linux [ps]=procps [getconf]=libc-bin)
    local missing=() tool
    for tool in "${!pkg_of[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg_of[$tool]}")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (run as root to install them)"
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Build Isthmus only when the binary is absent; a stale binary is reported
# in the header (path + mtime) rather than silently rebuilt.
# Any Isthmus row built from this tree (plain, rich, logged) needs the binary;
# isthmus-base runs ISTHMUS_BASE_BIN, which is never built here.
has_isthmus() { has_proxy isthmus || has_proxy isthmus-rich || has_proxy isthmus-logged; }

# oha (HTTP/2 and fixed-rate loads) is not packaged by Debian: cargo installs it.
ensure_oha() {
    uses_oha || return 0
    [[ -x $OHA ]] && return 0
    log "installing oha (cargo install oha --locked)"
    cargo install oha --locked >&2 || die "cannot install oha"
    OHA=$HOME/.cargo/bin/oha
}

ensure_isthmus() {
    if has_proxy isthmus-base && [[ ! -x $ISTHMUS_BASE_BIN ]]; then
        die "isthmus-base needs ISTHMUS_BASE_BIN, an Isthmus binary (got '$ISTHMUS_BASE_BIN')"
    fi
    has_isthmus || return 0
    if [[ ! -x $ISTHMUS_BIN ]]; then
        log "building Isthmus (cargo build --release)"
        (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
        [[ -x $ISTHMUS_BIN ]] || die "no binary at $ISTHMUS_BIN after the build"
    fi
}

# A listener already on one of our ports would silently be benchmarked instead.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
    local port
    for port in "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$ISTHMUS_PORT" "$ISTHMUS_ADMIN_PORT"; do
        if port_in_use "$port"; then die "127.0.0.1:$port is already in use"; fi
    done
}

# A pid and all its descendants (nginx = master + worker).
proc_tree() {
    local pid=$1 child
    [[ -d /proc/$pid ]] || return 0
    echo "$pid"
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        proc_tree "$child"
    done
}

# Start a server in the background with its output in $WORK/<name>.log.
# `taskset`/`env` exec the real program, so $! is the server's own pid.
start_bg() {
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# TERM the whole tree (so nginx workers never outlive a KILLed master),
# give it up to 5 s, then KILL what is left.
stop_tree() {
    local pids i
    pids=$(proc_tree "$1")
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pids=$(for p in $pids; do if [[ -d /proc/$p ]]; then echo "$p"; fi; done)
        [[ -z $pids ]] && break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    local pid
    set +e # best effort: one failing kill must not stop the rest of the cleanup
    [[ -n $WRK_PID ]] && kill -TERM "$WRK_PID" 2>/dev/null
    for pid in "${STARTED_PIDS[@]}"; do stop_tree "$pid"; done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP_TMP == 1 ]]; then log "kept temp dir $WORK"; else rm -rf "$WORK"; fi
    fi
}

# utime+stime, then stime alone (clock ticks), summed over a process tree. Threads
# are included: /proc/<pid>/stat of a process covers all its threads.
cpu_ticks() {
    local total=0 sys=0 pid stat
    local -a f
    for pid in $(proc_tree "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }               # drop "pid (comm) " — comm may contain spaces
        read -r -a f <<<"$stat"
        total=$((total + f[11] + f[12])) # fields 14 and 15 of the full line
        sys=$((sys + f[12]))
    done
    echo "$total $sys"
}

# "busy total" jiffies of one core from /proc/stat (busy = all but idle+iowait).
# Used to show which core was the bottleneck: with wrk and the backend sharing
# a core, that core often saturates before the proxy's does.
core_jiffies() { # core
    awk -v c="cpu$1" '$1 == c {
        t = 0; for (i = 2; i <= 9; i++) t += $i
        print t - $5 - $6, t }' /proc/stat
}

core_busy_pct() { # "busy0 total0" "busy1 total1"
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        dt = y[2] - x[2]; if (dt <= 0) { print 0; exit }
        printf "%.0f\n", 100 * (y[1] - x[1]) / dt }'
}

# VmRSS in kB summed over a process tree.
rss_kb() {
    local total=0 pid kb
    for pid in $(proc_tree "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Poll until the URL answers 200 with the backend's body, or fail after
# READY_TIMEOUT seconds (showing the server log). Also proves the route works.
wait_route() {
    local name=$1 pid=$2 url=$3 deadline body h2=()
    # An h2c listener (nginx, HAProxy with proto h2) speaks only HTTP/2 with prior knowledge.
    [[ $H2 == 1 && $name != backend && $name != direct ]] && h2=(--http2-prior-knowledge)
    [[ $H2 == 1 && $TLS == 1 ]] && h2=(--http2)
    deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        [[ -d /proc/$pid ]] || { tail -n 20 "$WORK/$name.log" >&2; die "$name exited during start-up"; }
        if body=$(curl -skf "${h2[@]}" --max-time 1 -H "Host: $HOST_HEADER" "$url" 2>/dev/null) && [[ $body == ok ]]; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$WORK/$name.log" >&2
    die "$name did not serve 200 \"ok\" on $url within ${READY_TIMEOUT}s"
}

wait_ok() { # pid url — plain health endpoint, any 2xx
    local pid=$1 url=$2 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        [[ -d /proc/$pid ]] || return 1
        curl -sf --max-time 1 -o /dev/null "$url" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- configs
# nginx writes temp files and a pid file under compiled-in system paths by
# default; point everything into the temp dir so no root-owned state is touched.
nginx_common() { # name
    local d=$WORK/$1
    mkdir -p "$d"
    cat <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $MAX_CONNS; }
EOF
}

nginx_temp_paths() { # name — only for modules this nginx was built with
    local d=$WORK/$1 m
    printf '    client_body_temp_path %s;\n    proxy_temp_path %s;\n' "$d/client_body" "$d/proxy"
    for m in fastcgi uwsgi scgi; do
        nginx -V 2>&1 | grep -q -- "--without-http_${m}_module" || printf '    %s_temp_path %s;\n' "$m" "$d/$m"
    done
}

# keepalive_requests is raised from nginx's default 1000 because at that
# count nginx closes the connection, and the reconnects would be charged to
# whichever proxy talks to nginx (the backend) or is nginx (the proxy).
write_backend_conf() {
    {
        nginx_common backend
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths backend)
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type text/plain;
        location / { return 200 "ok\n"; }
    }
}
EOF
    } >"$WORK/backend.conf"
}

write_nginx_conf() {
    {
        nginx_common nginx
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths nginx)
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT$( [[ $TLS == 1 ]] && echo " ssl")$( [[ $H2 == 1 ]] && echo " http2");
$(tls_nginx_lines)
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # pass the client's Host through, as HAProxy and Istio/Envoy do
            proxy_set_header Host \$host;
        }
    }
}
EOF
    } >"$WORK/nginx.conf"
}

# One certificate for every proxy: ECDSA P-256, as the performance guide asks.
make_cert() {
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" -subj "/CN=$HOST_HEADER" \
        -addext "subjectAltName=DNS:$HOST_HEADER" >/dev/null 2>&1 || die "openssl could not make a certificate"
    cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/combined.pem"
}

tls_nginx_lines() {
    [[ $TLS == 1 ]] || return 0
    printf '        ssl_certificate %s;\n        ssl_certificate_key %s;\n        ssl_protocols TLSv1.3;\n' \
        "$WORK/tls/cert.pem" "$WORK/tls/key.pem"
}

# No "log" lines anywhere: HAProxy then logs nothing.
write_haproxy_conf() {
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAX_CONNS
    # The descriptors it may use: what this script could raise the limit to. HAProxy wants two
    # per connection (client and server side) and by default refuses to start if it cannot
    # raise the limit that far; without strict limits it warns instead. The idle client
    # connections need no server side, so they fit.
    ulimit-n $(ulimit -n)
    no strict-limits

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 75s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT$( [[ $TLS == 1 ]] && echo " ssl crt $WORK/tls/combined.pem ssl-min-ver TLSv1.3")$( [[ $H2 == 1 ]] && { [[ $TLS == 1 ]] && echo " alpn h2,http/1.1" || echo " proto h2"; })
    default_backend be

backend be
    server backend 127.0.0.1:$BACKEND_PORT
EOF
}

write_isthmus_conf() {
    mkdir -p "$WORK/isthmus" "$WORK/isthmus-rich" "$WORK/isthmus-logged" "$WORK/isthmus-base"
    isthmus_common >"$WORK/isthmus/bench.yaml"
    cat >>"$WORK/isthmus/bench.yaml" <<EOF
  http:
  - route:
    - destination: {host: backend.bench.local, port: {number: 80}}
EOF
    # The logged and base rows serve the same route.
    cp "$WORK/isthmus/bench.yaml" "$WORK/isthmus-logged/bench.yaml"
    cp "$WORK/isthmus/bench.yaml" "$WORK/isthmus-base/bench.yaml"
    # The rich route: what a typical production route does per request, a regex
    # match and header edits on both sides, including a rendered operator.
    isthmus_common >"$WORK/isthmus-rich/bench.yaml"
    cat >>"$WORK/isthmus-rich/bench.yaml" <<EOF
  http:
  - match:
    - uri: {regex: "/[a-z0-9/._-]*"}
    headers:
      request:
        set: {x-bench: "rich"}
        add: {x-client: "%DOWNSTREAM_REMOTE_ADDRESS%"}
        remove: [x-unused]
      response:
        set: {x-served-by: isthmus}
        remove: [x-powered-by]
    route:
    - destination: {host: backend.bench.local, port: {number: 80}}
EOF
}

isthmus_server() {
    if [[ $TLS == 1 ]]; then
        cat <<EOF
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, serverCertificate: $WORK/tls/cert.pem, privateKey: $WORK/tls/key.pem, minProtocolVersion: TLSV1_3}
EOF
    else
        printf '  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ["*"]\n'
    fi
}

isthmus_common() {
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
$(isthmus_server)
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.bench.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: ["*"]
  gateways: [bench-gw]
EOF
}

write_configs() {
    [[ $TLS == 1 ]] && make_cert
    write_backend_conf
    has_proxy nginx && write_nginx_conf
    has_proxy haproxy && write_haproxy_conf
    has_isthmus && write_isthmus_conf
    # Validate up front so a typo fails before any load is generated.
    nginx -t -q -e "$WORK/backend/error.log" -c "$WORK/backend.conf" >/dev/null 2>&1 ||
        { nginx -t -e /dev/stderr -c "$WORK/backend.conf"; die "backend nginx config invalid"; }
    if has_proxy nginx; then
        nginx -t -q -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" >/dev/null 2>&1 ||
            { nginx -t -e /dev/stderr -c "$WORK/nginx.conf"; die "nginx config invalid"; }
    fi
    if has_proxy haproxy; then
        haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy config invalid"
    fi
    return 0
}

# ---------------------------------------------------------------- servers
start_backend() {
    start_bg backend taskset -c "$LOAD_CPU" nginx -e "$WORK/backend/error.log" -c "$WORK/backend.conf"
    BACKEND_PID=$LAST_PID
    wait_route backend "$BACKEND_PID" "http://127.0.0.1:$BACKEND_PORT/"
}

# Start one proxy pinned to PROXY_CPU and wait until the route answers.
# Sets PROXY_PID (the process tree whose CPU/RSS is measured) and PROXY_URL.
# "direct" starts nothing: the measured process is the backend itself.
start_proxy() {
    case $1 in
    direct)
        PROXY_PID=$BACKEND_PID
        PROXY_URL="http://127.0.0.1:$BACKEND_PORT/"
        return 0
        ;;
    nginx)
        start_bg nginx taskset -c "$PROXY_CPU" "${WRAP[@]}" nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf"
        PROXY_URL="$SCHEME://127.0.0.1:$NGINX_PORT/"
        ;;
    haproxy)
        # -db: stay in the foreground as a single process (no master/worker).
        start_bg haproxy taskset -c "$PROXY_CPU" "${WRAP[@]}" haproxy -db -f "$WORK/haproxy.cfg"
        PROXY_URL="$SCHEME://127.0.0.1:$HAPROXY_PORT/"
        ;;
    isthmus | isthmus-rich | isthmus-logged | isthmus-base)
        local bin=$ISTHMUS_BIN extra=()
        [[ $1 == isthmus-base ]] && bin=$ISTHMUS_BASE_BIN
        # The access log goes to a file outside the watched config folder, as
        # a deployment would write it; a fresh file for every run.
        [[ $1 == isthmus-logged ]] && extra=(--access-log "$WORK/isthmus-logged.access.log")
        rm -f "$WORK/isthmus-logged.access.log"
        start_bg "$1" env ISTHMUS_WORKERS=1 RUST_LOG=warn \
            taskset -c "$PROXY_CPU" "${WRAP[@]}" "$bin" run --config "$WORK/$1" \
            --bind "80=127.0.0.1:$ISTHMUS_PORT" --bind "443=127.0.0.1:$ISTHMUS_PORT" \
            --admin "127.0.0.1:$ISTHMUS_ADMIN_PORT" "${extra[@]}"
        PROXY_URL="$SCHEME://127.0.0.1:$ISTHMUS_PORT/"
        if ! wait_ok "$LAST_PID" "http://127.0.0.1:$ISTHMUS_ADMIN_PORT/healthz/ready"; then
            tail -n 20 "$WORK/$1.log" >&2
            die "isthmus not ready on :$ISTHMUS_ADMIN_PORT/healthz/ready within ${READY_TIMEOUT}s"
        fi
        ;;
    *) die "unknown proxy '$1' (expected direct, nginx, haproxy, isthmus, isthmus-rich, isthmus-logged, isthmus-base)" ;;
    esac
    PROXY_PID=$LAST_PID
    wait_route "$1" "$PROXY_PID" "$PROXY_URL"
}

stop_proxy() {
    [[ $1 == direct ]] && return 0
    stop_tree "$PROXY_PID"
    # Forget the pid so the exit trap can never signal an unrelated process
    # that reuses it later in a long run.
    local pid kept=()
    for pid in "${STARTED_PIDS[@]}"; do [[ $pid == "$PROXY_PID" ]] || kept+=("$pid"); done
    STARTED_PIDS=("${kept[@]}")
}

# ---------------------------------------------------------------- load
# wrk runs in the background and we `wait` for it, so an INT/TERM sent to
# this script runs the cleanup trap at once instead of after the load ends.
run_wrk() { # seconds url outfile
    local close=()
    [[ $NEW_CONN == 1 ]] && close=(-H "Connection: close")
    # shellcheck disable=SC2046 # wrk_body's words are wrk's arguments
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$1"s --latency $(wrk_body) \
        -H "Host: $HOST_HEADER" "${close[@]}" "$2" >"$3" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then WRK_PID=""; cat "$3" >&2; die "wrk failed"; fi
    WRK_PID=""
}

# wrk's arguments for BODY: a script making every request a POST of BODY bytes.
wrk_body() {
    ((BODY > 0)) || return 0
    if [[ ! -f $WORK/post.lua ]]; then
        printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' "$BODY" >"$WORK/post.lua"
    fi
    echo "-s $WORK/post.lua"
}

# oha (HTTP/2, or an open-loop fixed rate): JSON output in outfile.
run_oha() { # seconds url outfile
    local extra=()
    [[ $H2 == 1 ]] && extra+=(--http2 -p "$STREAMS")
    ((RATE > 0)) && extra+=(-q "$RATE" --latency-correction)
    [[ $TLS == 1 ]] && extra+=(--insecure)
    [[ $NEW_CONN == 1 ]] && extra+=(--disable-keepalive)
    if ((BODY > 0)); then
        head -c "$BODY" /dev/zero | tr '\0' x >"$WORK/post.body"
        extra+=(-m POST -D "$WORK/post.body")
    fi
    # The URL names the route's host (HTTP/2 carries it as :authority; a Host header would be
    # refused) and --connect-to sends it to the proxy's port.
    local port=${2##*:}; port=${port%%/*}
    taskset -c "$LOAD_CPU" "$OHA" -z "$1"s -c "$CONNECTIONS" --no-tui --output-format json \
        --connect-to "$HOST_HEADER:$port:127.0.0.1:$port" "${extra[@]}" \
        "${2/127.0.0.1/$HOST_HEADER}" >"$3" 2>"$3.err" &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then WRK_PID=""; cat "$3.err" >&2; die "oha failed"; fi
    WRK_PID=""
}

uses_oha() { [[ $H2 == 1 ]] || ((RATE > 0)); }

run_load() { if uses_oha; then run_oha "$@"; else run_wrk "$@"; fi; }

# Prints what parse_wrk prints, from oha's JSON: rps p50 p99 requests errors.
parse_oha() {
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
ok = sum(v for k, v in codes.items() if k < 400)
errors = sum(v for k, v in codes.items() if k >= 400) + sum(d.get("errorDistribution", {}).values())
p = d["latencyPercentiles"]
if p.get("p50") is None or ok == 0:
    sys.exit(1)
secs = d["summary"]["total"]
print(f"{ok / secs:.2f} {p['p50'] * 1e6:.2f}us {p['p99'] * 1e6:.2f}us {ok} {errors}")
PY
}

parse_load() { if uses_oha; then parse_oha "$@"; else parse_wrk "$@"; fi; }

# wrk prints latencies as 412.00us / 1.23ms / 2.00s / 1.00m.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : (u == "h") ? 3.6e9 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.1f\n", n * f }'
}

# Prints: rps p50 p99 requests errors  (errors = socket errors + wrk's
# "Non-2xx or 3xx" count, which in wrk means status >= 400).
parse_wrk() {
    awk '
        /Latency Distribution/           { dist = 1 }
        dist && $1 == "50%"              { p50 = $2 }
        dist && $1 == "99%"              { p99 = $2 }
        / requests in /                  { reqs = $1 }
        /Socket errors:/                 { sock = $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/      { bad = $NF }
        /^Requests\/sec:/                { rps = $2 }
        END {
            if (rps == "" || reqs == "" || p50 == "" || p99 == "") exit 1
            print rps, p50, p99, reqs, sock + bad
        }' "$1"
}

# One measured run of one proxy: fresh start, idle RSS, warm-up, measured
# load bracketed by CPU readings, RSS after load, stop. Appends a TSV row.
bench_once() { # proxy run
    local name=$1 run=$2 out rss_idle ticks0 ticks1 sys0 sys1 t0 t1 rss_load
    local rps p50 p99 reqs errs cpu_us_req sys_us_req cpu_pct pcore0 lcore0 pcore_pct lcore_pct
    log "run $run/$RUNS: $name"
    start_proxy "$name"
    rss_idle=$(rss_kb "$PROXY_PID")
    ((IDLE_CONNS > 0)) && measure_idle_conns "$name" "$run"

    run_load "$WARMUP" "$PROXY_URL" "$WORK/$name.run$run.warmup.txt"

    out=$WORK/$name.run$run.txt
    read -r ticks0 sys0 < <(cpu_ticks "$PROXY_PID"); t0=$(date +%s%N)
    pcore0=$(core_jiffies "$PROXY_CPU"); lcore0=$(core_jiffies "$LOAD_CPU")
    run_load "$DURATION" "$PROXY_URL" "$out"
    read -r ticks1 sys1 < <(cpu_ticks "$PROXY_PID"); t1=$(date +%s%N)
    pcore_pct=$(core_busy_pct "$pcore0" "$(core_jiffies "$PROXY_CPU")")
    lcore_pct=$(core_busy_pct "$lcore0" "$(core_jiffies "$LOAD_CPU")")
    rss_load=$(rss_kb "$PROXY_PID")
    [[ -d /proc/$PROXY_PID ]] || die "$name died during the load"
    [[ $name == isthmus-logged ]] && report_access_log
    stop_proxy "$name"

    read -r rps p50 p99 reqs errs < <(parse_load "$out") || { cat "$out" >&2; die "cannot parse the load generator's output"; }
    ((reqs > 0)) || die "$name: wrk completed 0 requests"
    cpu_us_req=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    sys_us_req=$(awk -v d=$((sys1 - sys0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    cpu_pct=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) }')
    if ((errs > 0)); then log "WARNING: $name run $run had $errs errors (wrk output below)"; cat "$out" >&2; fi

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$rps" \
        "$(to_us "$p50")" "$(to_us "$p99")" "$reqs" "$errs" "$cpu_us_req" "$cpu_pct" \
        "$rss_idle" "$rss_load" "$pcore_pct" "$lcore_pct" "$sys_us_req" >>"$RESULTS"
    log "  $rps req/s, p50 $p50, p99 $p99, $cpu_us_req CPU µs/req ($sys_us_req in the kernel; ${cpu_pct}% of a core), RSS ${rss_idle}→${rss_load} kB, errors $errs; core busy: proxy ${pcore_pct}%, load ${lcore_pct}%"
    sleep 1 # let the proxy's sockets close before the next load
}

# Holds IDLE_CONNS idle keep-alive connections (each served one request) and
# records the proxy's RSS with them open, in $WORK/idle.tsv.
per_conn() { # rss_before_kb rss_after_kb
    awk -v a="$1" -v b="$2" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (b - a) / n }'
}

measure_idle_conns() { # proxy run
    local port rss_base rss_held rss_live fifo line
    port=${PROXY_URL##*:}; port=${port%%/*}
    # First one second of traffic on as many connections as the holder opens at once
    # (idle_conns.py's BATCH), so that every proxy's upstream keep-alive pool is as large
    # before the idle connections as with them: the pool grows with concurrency, not with
    # the number of idle clients, and is not what an idle connection costs.
    (CONNECTIONS=100 RATE=0 run_load 1 "$PROXY_URL" "$WORK/idle.warm")
    sleep 1 # the warm-up's client connections close
    rss_base=$(rss_kb "$PROXY_PID")
    fifo=$WORK/idle.fifo; rm -f "$fifo"; mkfifo "$fifo"
    # The holder keeps its connections until its stdin (the fifo) closes.
    taskset -c "$LOAD_CPU" python3 "$ROOT/bench/idle_conns.py" "$port" "$IDLE_CONNS" "$HOST_HEADER" $( [[ $TLS == 1 ]] && echo tls; [[ $TLS != 1 && $H2 == 1 ]] && echo h2c) \
        <"$fifo" >"$WORK/idle.out" 2>&1 &
    local holder=$!
    exec 9>"$fifo"
    local deadline=$((SECONDS + 120))
    until line=$(grep -m1 '^ready' "$WORK/idle.out" 2>/dev/null); do
        if ! kill -0 "$holder" 2>/dev/null || ((SECONDS > deadline)); then
            exec 9>&-; cat "$WORK/idle.out" >&2; die "$1: could not hold $IDLE_CONNS idle connections"
        fi
        sleep 0.2
    done
    sleep "$IDLE_HOLD"
    rss_held=$(rss_kb "$PROXY_PID")
    # Then one second of traffic on one more connection, the idle ones still held: an
    # allocator that gives freed pages back to the system only as it allocates again
    # (mimalloc) then shows what the idle connections really hold.
    (CONNECTIONS=1 RATE=0 run_load 1 "$PROXY_URL" "$WORK/idle.trickle")
    rss_live=$(rss_kb "$PROXY_PID")
    exec 9>&-
    wait "$holder" || true
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rss_base" "$rss_held" "$rss_live" >>"$WORK/idle.tsv"
    log "  $IDLE_CONNS idle connections: RSS $rss_base -> $rss_held kB quiet ($(per_conn "$rss_base" "$rss_held") kB each), $rss_live kB after a trickle of traffic ($(per_conn "$rss_base" "$rss_live") kB each)"
    sleep 1 # let the proxy close them before the load
}

print_idle_table() {
    [[ -s $WORK/idle.tsv ]] || return 0
    echo "Idle keep-alive connections: $IDLE_CONNS held open (one request each), RSS before and with them (medians);"
    echo "  before: after one second of traffic on 100 connections (the upstream pool filled)"
    echo "  quiet: read after IDLE_HOLD seconds without traffic; live: after one more second of"
    echo "  traffic on one other connection (an allocator may return freed pages only as it allocates)"
    printf '%-14s %10s %10s %12s %10s %10s %10s\n' proxy RSSidleMB RSSheldMB kB_per_conn vs_nginx kB_live vs_nginx
    local p base="" base_live="" med_i med_h med_l per live
    for p in $PROXIES; do
        med_i=$(idle_median "$p" 3)
        med_h=$(idle_median "$p" 4)
        med_l=$(idle_median "$p" 5)
        [[ -n $med_i ]] || continue
        per=$(per_conn "$med_i" "$med_h")
        live=$(per_conn "$med_i" "$med_l")
        [[ $p == nginx ]] && base=$per && base_live=$live
        printf '%-14s %10.1f %10.1f %12s %10s %10s %10s\n' "$p" "$(awk -v k="$med_i" 'BEGIN { print k / 1024 }')" \
            "$(awk -v k="$med_h" 'BEGIN { print k / 1024 }')" "$per" "$( [[ -n $base ]] && ratio "$per" "$base" || echo -)" \
            "$live" "$( [[ -n $base_live ]] && ratio "$live" "$base_live" || echo -)"
    done
    echo
}

idle_median() { # proxy column (of idle.tsv)
    awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c }' "$WORK/idle.tsv" | sort -g |
        awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# The logged row's proof of work: lines written and lines dropped (the writer
# drops rather than slow traffic down; see README, Telemetry).
report_access_log() {
    local dropped lines
    dropped=$(curl -fsS "http://127.0.0.1:$ISTHMUS_ADMIN_PORT/stats/prometheus" |
        awk '$1 == "isthmus_access_log_dropped_total" { print $2 }')
    lines=$(wc -l <"$WORK/isthmus-logged.access.log")
    log "  access log: $lines lines written, ${dropped:-?} dropped (warm-up and checks included)"
}

# ---------------------------------------------------------------- report
# TSV columns: 1 proxy 2 run 3 rps 4 p50_us 5 p99_us 6 requests 7 errors
#              8 cpu_us_per_req 9 cpu_pct 10 rss_idle_kb 11 rss_load_kb
#              12 proxy_core_busy_pct 13 load_core_busy_pct 14 sys_us_per_req
median_of() { # proxy column
    awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c }' "$RESULTS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

sum_of() { awk -F'\t' -v p="$1" -v c="$2" '$1 == p { s += $c } END { print s + 0 }' "$RESULTS"; }

declare -A MED # MED[proxy,column] = median across runs

summarise() {
    local p c
    for p in $PROXIES; do
        for c in 3 4 5 8 9 10 11 12 13 14; do MED[$p,$c]=$(median_of "$p" "$c"); done
        MED[$p,7]=$(sum_of "$p" 7) # errors: total over all runs, not a median
    done
}

print_header() {
    local isthmus_info="not run"
    if has_isthmus; then
        isthmus_info="$ISTHMUS_BIN (built $(date -r "$ISTHMUS_BIN" '+%F %T'), git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none))"
    fi
    if has_proxy isthmus-base; then
        isthmus_info="$isthmus_info; isthmus-base: $ISTHMUS_BASE_BIN (built $(date -r "$ISTHMUS_BASE_BIN" '+%F %T'))"
    fi
    echo
    echo "Isthmus proxy benchmark — $(date '+%F %T %Z')"
    echo "  cpu:      $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "  versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), haproxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
    echo "  isthmus:  $isthmus_info"
    if uses_oha; then
        echo "  load:     oha $("$OHA" --version 2>/dev/null | awk '{ print $2 }') -c$CONNECTIONS -z${DURATION}s$( [[ $H2 == 1 ]] && echo " --http2 -p$STREAMS (HTTP/2)")$( ((RATE > 0)) && echo " -q$RATE --latency-correction (open loop, $RATE req/s)") (after ${WARMUP}s warm-up), Host: $HOST_HEADER"
    else
        echo "  load:     wrk -t1 -c$CONNECTIONS -d${DURATION}s (after ${WARMUP}s warm-up), Host: $HOST_HEADER, 1 route -> 1 upstream"
    fi
    echo "  pinning:  proxy on core $PROXY_CPU; wrk + backend nginx on core $LOAD_CPU; 1 worker per proxy"
    echo "  client:   $SCHEME$( [[ $TLS == 1 ]] && echo " (TLS 1.3, ECDSA P-256, same certificate everywhere)")$( [[ $NEW_CONN == 1 ]] && echo ", a new connection per request (req/s = handshakes/s)" || echo ", keep-alive")$( ((BODY > 0)) && echo ", POST with a ${BODY}-byte body")"
    echo "  machine:  $IDLE_NOTE"
    echo "  runs:     $RUNS per proxy, interleaved; medians shown (each column's median taken separately)"
    if ((RATE > 0)); then
        echo "  NOTE: latency is OPEN-LOOP at a fixed $RATE req/s, corrected for coordinated omission."
    else
        echo "  NOTE: latency is CLOSED-LOOP (the client waits for each response before sending the next"
        echo "        on that connection), so p50/p99 include queueing and are not open-loop latencies."
    fi
    echo
}

print_table() {
    local p label
    printf '%-14s %9s %8s %8s %10s %7s %6s %9s %9s %6s %6s %6s\n' \
        proxy req/s p50_us p99_us CPU_us/req sys_us proc% RSSidleMB RSSloadMB core$PROXY_CPU% core$LOAD_CPU% errors
    for p in $PROXIES; do
        label=$p; [[ $p == direct ]] && label="direct*"
        printf '%-14s %9.0f %8.0f %8.0f %10.2f %7.2f %6.0f %9.1f %9.1f %6.0f %6.0f %6d\n' "$label" \
            "${MED[$p,3]}" "${MED[$p,4]}" "${MED[$p,5]}" "${MED[$p,8]}" "${MED[$p,14]}" "${MED[$p,9]}" \
            "$(awk -v k="${MED[$p,10]}" 'BEGIN { print k / 1024 }')" \
            "$(awk -v k="${MED[$p,11]}" 'BEGIN { print k / 1024 }')" \
            "${MED[$p,12]}" "${MED[$p,13]}" "${MED[$p,7]}"
    done
    echo
    echo "sys_us: the part of CPU_us/req spent in the kernel (system calls, and the TCP/IP stack of both"
    echo "  sockets: on loopback, sending runs the peer's receive path too). The rest is the proxy's own code."
    echo "proc%: CPU time of the measured process(es) / wall time of the load (100 = one full core)."
    echo "core$PROXY_CPU% / core$LOAD_CPU%: whole-core busy time (proxy core / wrk+backend core) during the load;"
    echo "  a core near 100% is the bottleneck, so req/s and latency say more about it than about the proxy."
    echo "errors: socket errors + responses >= 400, summed over all runs (should be 0)."
    if has_proxy direct; then
        echo "* direct = wrk straight to the backend, no proxy; its CPU/proc%/RSS columns are the"
        echo "  backend nginx's own (shares core $LOAD_CPU with wrk), a floor for serving one request."
    fi
    echo
}

# CPU µs per request outside the kernel (median CPU minus median kernel time).
user_us() { awk -v c="${MED[$1,8]}" -v s="${MED[$1,14]}" 'BEGIN { print c - s }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2fx\n", a / b }'; }

print_ratios() { # reference proxy
    local ref=$1 p
    has_proxy "$ref" || return 0
    echo "Ratios vs $ref (proxy / $ref; req/s: higher is better, everything else: lower is better)"
    printf '%-14s %8s %8s %8s %11s %9s %10s %10s\n' proxy req/s p50 p99 CPU/req user/req RSS_idle RSS_load
    for p in $PROXIES; do
        [[ $p == direct ]] && continue
        printf '%-14s %8s %8s %8s %11s %9s %10s %10s\n' "$p" \
            "$(ratio "${MED[$p,3]}" "${MED[$ref,3]}")" "$(ratio "${MED[$p,4]}" "${MED[$ref,4]}")" \
            "$(ratio "${MED[$p,5]}" "${MED[$ref,5]}")" "$(ratio "${MED[$p,8]}" "${MED[$ref,8]}")" \
            "$(ratio "$(user_us "$p")" "$(user_us "$ref")")" \
            "$(ratio "${MED[$p,10]}" "${MED[$ref,10]}")" "$(ratio "${MED[$p,11]}" "${MED[$ref,11]}")"
    done
    echo
}

# ---------------------------------------------------------------- main
validate_knobs() {
    local p
    [[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"
    [[ $WARMUP =~ ^[0-9]+$ && $WARMUP -gt 0 ]] || die "WARMUP must be a positive integer"
    [[ $RUNS =~ ^[0-9]+$ && $RUNS -gt 0 ]] || die "RUNS must be a positive integer"
    [[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -gt 0 ]] || die "CONNECTIONS must be a positive integer"
    [[ $BODY =~ ^[0-9]+$ ]] || die "BODY must be a number of bytes"
    for p in $PROXIES; do
        case $p in direct | nginx | haproxy | isthmus | isthmus-rich | isthmus-logged | isthmus-base) ;; *) die "unknown proxy '$p' in PROXIES" ;; esac
    done
    (($(nproc) >= 2)) || log "WARNING: fewer than 2 cores: proxy and load generator will compete"
}

# Other busy processes (a cargo build, a test suite) would steal time from
# whichever side they land on and skew the comparison: sample both cores for
# a second and warn if they are not idle. Warn only; the run still proceeds.
check_idle() {
    local p0 l0 p1 l1
    p0=$(core_jiffies "$PROXY_CPU"); l0=$(core_jiffies "$LOAD_CPU")
    sleep 1
    p1=$(core_busy_pct "$p0" "$(core_jiffies "$PROXY_CPU")")
    l1=$(core_busy_pct "$l0" "$(core_jiffies "$LOAD_CPU")")
    if ((p1 > 10 || l1 > 10)); then
        log "WARNING: machine not idle before the benchmark (core $PROXY_CPU ${p1}% busy, core $LOAD_CPU ${l1}% busy); results will be noisy"
        IDLE_NOTE="NOT idle at start (core $PROXY_CPU ${p1}%, core $LOAD_CPU ${l1}% busy) — numbers are suspect"
    else
        IDLE_NOTE="idle at start (core $PROXY_CPU ${p1}%, core $LOAD_CPU ${l1}% busy)"
    fi
}

main() {
    validate_knobs
    # Each idle connection is a descriptor in the proxy and in the holder (and a second one
    # in the proxy for its upstream, for some proxies).
    # Without privileges the limit can rise only to the hard limit: it is used if it still
    # leaves room for the idle connections, the load and some spare in each process.
    if ((IDLE_CONNS > 0)); then
        local want=$((2 * MAX_CONNS + 1024)) hard
        hard=$(ulimit -Hn)
        if [[ $hard != unlimited ]] && ((want > hard)); then
            ((hard >= MAX_CONNS + 1024)) || die "the hard open-file limit ($hard) is too low for IDLE_CONNS=$IDLE_CONNS"
            log "open-file limit: $want wanted, using the hard limit $hard"
            want=$hard
        fi
        ulimit -n "$want" || die "cannot raise the open-file limit"
    fi
    ensure_tools
    ensure_oha
    ensure_isthmus
    check_ports
    check_idle

    WORK=$(mktemp -d -t isthmus-bench.XXXXXX)
    # nginx workers drop to an unprivileged user when started as root and must
    # still be able to reach their temp dirs under $WORK.
    chmod 755 "$WORK"
    RESULTS=$WORK/results.tsv
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    write_configs
    start_backend

    local run p
    for ((run = 1; run <= RUNS; run++)); do
        for p in $PROXIES; do bench_once "$p" "$run"; done
    done

    if [[ -n $OUT ]]; then
        { printf 'proxy\trun\trps\tp50_us\tp99_us\trequests\terrors\tcpu_us_per_req\tcpu_pct\trss_idle_kb\trss_load_kb\tproxy_core_busy_pct\tload_core_busy_pct\n'
          cat "$RESULTS"; } >"$OUT"
        log "raw per-run results written to $OUT"
    fi

    summarise
    print_header
    print_table
    print_ratios nginx
    print_ratios haproxy
    print_ratios isthmus
    print_idle_table
}

# Run only when executed, so the functions can be sourced for a quick check.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
