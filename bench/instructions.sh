#!/usr/bin/env bash
# bench/instructions.sh — user-space instructions per proxied request, counted by valgrind's
# callgrind, for Isthmus, nginx and HAProxy in the same run, with bench/run.sh's configs,
# backend and load (its functions are sourced).
#
# CPU time on a shared 2-core VM moves by 5-10 % from run to run; an instruction count does
# not depend on what else the machine is doing, so it can tell two builds apart by 1 %. It
# leaves out the kernel (system calls and both ends' TCP stack), about the same for all three
# proxies (bench/README.md), and it weighs every instruction alike: a cache miss or a copy
# costs more than its count says. Use it next to run.sh, not instead of it.
#
# Usage (from anywhere; as root so that valgrind can be installed if missing):
#   bench/instructions.sh
#   PROXIES="isthmus isthmus-base" ISTHMUS_BASE_BIN=/path/to/older/isthmus bench/instructions.sh
#
# Knobs (environment variables):
#   PROXIES      rows, as in run.sh: nginx haproxy isthmus isthmus-rich isthmus-logged
#                isthmus-base                              (default "nginx haproxy isthmus")
#   DURATION     seconds of load per proxy                              (default 8)
#   CONNECTIONS  wrk connections                                        (default 4)
#   TLS, BODY, ISTHMUS_BIN, ISTHMUS_BASE_BIN, KEEP_TMP    as in run.sh
#
# Method: each proxy runs twice under callgrind, every process and thread counted: once
# answering the one request that shows its route works, once more under wrk for DURATION
# seconds. Instructions per request = (Ir of the second - Ir of the first) / (requests of
# the second - 1): start-up and configuration are in both and cancel out. Under valgrind a
# proxy runs some 50 times slower, so it is the bottleneck and batches its reads and writes
# as it does at saturation. The backend runs natively and is not counted.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROXIES=${PROXIES:-"nginx haproxy isthmus"}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-4}
# shellcheck source=bench/run.sh
source "$ROOT/bench/run.sh"
# Start-up under valgrind takes seconds, not milliseconds.
READY_TIMEOUT=120

ensure_valgrind() {
    command -v valgrind >/dev/null 2>&1 && return 0
    [[ $(id -u) == 0 ]] || die "valgrind is missing (run as root to install it)"
    log "installing: valgrind"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}

# Stops the proxy so that it exits by itself, which is when callgrind writes its counts
# (a KILL would lose them): INT drains Isthmus, TERM stops nginx and HAProxy.
stop_counted() { # proxy
    local sig=TERM pids i
    [[ $1 == isthmus* ]] && sig=INT
    pids=$(proc_tree "$PROXY_PID")
    # shellcheck disable=SC2086
    kill -"$sig" $pids 2>/dev/null || true
    for ((i = 0; i < 1200; i++)); do
        pids=$(for p in $pids; do if [[ -d /proc/$p ]]; then echo "$p"; fi; done)
        [[ -z $pids ]] && break
        sleep 0.1
    done
    [[ -z $pids ]] || die "$1 did not exit within 120 s of SIG$sig under valgrind"
    wait "$PROXY_PID" 2>/dev/null || true
}

# The instructions callgrind counted in every process of one pass.
total_ir() { # file prefix
    local f sum=0 ir
    for f in "$1".*; do
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
        sum=$((sum + ${ir:-0}))
    done
    echo "$sum"
}

# One pass of a proxy under callgrind; sets PASS_REQUESTS and PASS_IR.
count_pass() { # proxy pass(0 = one request, 1 = load)
    local out="$CG/$1.$2"
    PASS_REQUESTS=1
    WRAP=(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p")
    start_proxy "$1"
    if [[ $2 == 1 ]]; then
        # shellcheck disable=SC2046
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION"s $(wrk_body) -H "Host: $HOST_HEADER" \
            "$PROXY_URL" >"$WORK/$1.wrk" 2>&1 || { cat "$WORK/$1.wrk" >&2; die "wrk failed"; }
        if grep -qE "Non-2xx|Socket errors" "$WORK/$1.wrk"; then
            cat "$WORK/$1.wrk" >&2
            die "$1: errors under load"
        fi
        PASS_REQUESTS=$(($(awk '/requests in/ { print $1 }' "$WORK/$1.wrk") + 1))
    fi
    stop_counted "$1"
    PASS_IR=$(total_ir "$out")
}

main_instructions() {
    validate_knobs
    ensure_tools
    ensure_valgrind
    ensure_isthmus
    check_ports
    WORK=$(mktemp -d -t isthmus-instr.XXXXXX)
    chmod 755 "$WORK"
    # nginx's worker drops to an unprivileged user and writes its own counts.
    CG=$WORK/callgrind
    mkdir -m 1777 "$CG"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    write_configs
    start_backend

    local p r idle load n
    local -A per
    for p in $PROXIES; do
        [[ $p == direct ]] && continue
        log "$p: one request under callgrind"
        count_pass "$p" 0
        idle=$PASS_IR
        log "$p: ${DURATION}s of load under callgrind"
        count_pass "$p" 1
        load=$PASS_IR n=$PASS_REQUESTS
        ((n > 1 && load > idle)) || die "$p: nothing counted under load"
        per[$p]=$(((load - idle) / (n - 1)))
        log "$p: $((n - 1)) requests, $((load - idle)) instructions: ${per[$p]} per request"
    done

    printf '\nUser-space instructions per proxied request (callgrind; %s, %s connections, %s s of load)\n' \
        "$SCHEME" "$CONNECTIONS" "$DURATION"
    printf '%-16s %12s' proxy instr/req
    for p in nginx haproxy isthmus; do [[ -n ${per[$p]:-} ]] && printf ' %12s' "vs $p"; done
    printf '\n'
    for p in $PROXIES; do
        [[ -n ${per[$p]:-} ]] || continue
        printf '%-16s %12s' "$p" "${per[$p]}"
        for r in nginx haproxy isthmus; do
            [[ -n ${per[$r]:-} ]] && printf ' %12s' "$(ratio "${per[$p]}" "${per[$r]}")"
        done
        printf '\n'
    done
}

main_instructions "$@"
