#!/usr/bin/env bash
# bench/testssl.sh — scan Isthmus's TLS termination with testssl.sh.
#
# Starts isthmus with one HTTPS server (mode SIMPLE, an ECDSA P-256 certificate signed by a
# throw-away CA, both made with openssl in a temp dir), runs testssl.sh against it on
# 127.0.0.1, prints the findings summary, and exits non-zero if any finding is MEDIUM or
# above (or if the scan itself could not run).
#
# Usage (run as root so missing tools can be installed with apt-get):
#   bench/testssl.sh
#   TESTSSL_ARGS="--fast" bench/testssl.sh
#
# Knobs (environment variables):
#   ISTHMUS_BIN   Isthmus binary (default: target/release/isthmus, else target/debug/isthmus,
#                 else `cargo build --release` first)
#   PORT          HTTPS port on 127.0.0.1                                   (default 18443)
#   ADMIN_PORT    admin port on 127.0.0.1                                   (default 18444)
#   TESTSSL_ARGS  extra testssl.sh arguments (word-split)                   (default none)
#   KEEP_TMP      1 keeps the temp dir (config, certificates, logs, JSON) and prints its path
#   APP_HEADERS   1: the route sets HSTS and the usual security headers, as a deployment does
#                 in its VirtualService; 0: none (testssl.sh then reports security_headers
#                 as MEDIUM, an application finding, not a TLS one)              (default 1)
#
# The certificate is issued by a CA made for the run and handed to testssl.sh with --add-ca,
# so the chain of trust is checked like a real one instead of being reported as
# self-signed; like any CA-issued certificate it names a CRL distribution point (never
# fetched: testssl.sh only looks it up with --phone-out). testssl.sh connects to 127.0.0.1
# (--ip) with SNI testssl.example.com.
#
# The route answers with a direct response. testssl.sh also looks at the HTTP answer; neither
# Envoy nor Isthmus adds HSTS or security headers on its own, a deployment sets them with
# VirtualService `headers.response`, and so does this script unless APP_HEADERS=0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-18443}
ADMIN_PORT=${ADMIN_PORT:-18444}
TESTSSL_ARGS=${TESTSSL_ARGS:-}
KEEP_TMP=${KEEP_TMP:-0}
APP_HEADERS=${APP_HEADERS:-1}
HOST=testssl.example.com
READY_TIMEOUT=20 # seconds isthmus gets to report ready

WORK=""
ISTHMUS_PID=""

log() { printf '[testssl] %s\n' "$*" >&2; }
die() { printf '[testssl] error: %s\n' "$*" >&2; exit 2; }

cleanup() {
    if [[ -n $ISTHMUS_PID ]] && kill -0 "$ISTHMUS_PID" 2>/dev/null; then
        kill "$ISTHMUS_PID" 2>/dev/null || true
        wait "$ISTHMUS_PID" 2>/dev/null || true
    fi
    if [[ -n $WORK ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}
trap cleanup EXIT

# testssl.sh is packaged by Debian as "testssl.sh"; its command is "testssl".
find_testssl() {
    command -v testssl 2>/dev/null || command -v testssl.sh 2>/dev/null || true
}

ensure_tools() {
    local missing=()
    [[ -n $(find_testssl) ]] || missing+=(testssl.sh)
    command -v jq >/dev/null || missing+=(jq)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    log "installing ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null; } ||
        die "apt-get could not install ${missing[*]}"
}

find_isthmus() {
    if [[ -n ${ISTHMUS_BIN:-} ]]; then
        [[ -x $ISTHMUS_BIN ]] || die "ISTHMUS_BIN=$ISTHMUS_BIN is not executable"
        return 0
    fi
    for candidate in "$ROOT/target/release/isthmus" "$ROOT/target/debug/isthmus"; do
        if [[ -x $candidate ]]; then
            ISTHMUS_BIN=$candidate
            return 0
        fi
    done
    log "building isthmus (cargo build --release)"
    (cd "$ROOT" && cargo build --release -q) || die "cargo build failed"
    ISTHMUS_BIN=$ROOT/target/release/isthmus
}

# A CA and a server certificate it signs: ECDSA P-256, SAN, serverAuth, CRL URI, one year.
make_certificates() {
    local d=$WORK/tls
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 400 \
        -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=isthmus testssl CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1 ||
        die "openssl could not make the CA"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/tls.key" -out "$d/tls.csr" -subj "/CN=$HOST" >/dev/null 2>&1 ||
        die "openssl could not make the key"
    cat >"$d/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$HOST
crlDistributionPoints=URI:http://ca.testssl.invalid/ca.crl
EOF
    openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 365 -sha256 -extfile "$d/ext.cnf" -out "$d/tls.crt" >/dev/null 2>&1 ||
        die "openssl could not sign the certificate"
}

write_config() {
    mkdir -p "$WORK/config"
    cat >"$WORK/config/gateway.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: testssl, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["$HOST"]
    tls:
      mode: SIMPLE
      serverCertificate: $WORK/tls/tls.crt
      privateKey: $WORK/tls/tls.key
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: testssl, namespace: default}
spec:
  hosts: ["$HOST"]
  gateways: [testssl]
  http:
  - directResponse:
      status: 200
      body: {string: "ok\n"}
EOF
    if [[ $APP_HEADERS == 1 ]]; then
        cat >>"$WORK/config/gateway.yaml" <<'EOF'
    headers:
      response:
        set:
          strict-transport-security: "max-age=31536000; includeSubDomains"
          x-content-type-options: nosniff
          x-frame-options: DENY
          content-security-policy: "default-src 'none'"
EOF
    fi
}

start_isthmus() {
    RUST_LOG=warn "$ISTHMUS_BIN" run --config "$WORK/config" \
        --bind "443=127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        >"$WORK/isthmus.log" 2>&1 &
    ISTHMUS_PID=$!
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fsS --noproxy '*' -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/healthz/ready" 2>/dev/null; do
        if ! kill -0 "$ISTHMUS_PID" 2>/dev/null; then
            tail -n 20 "$WORK/isthmus.log" >&2
            die "isthmus exited"
        fi
        ((SECONDS < deadline)) || { tail -n 20 "$WORK/isthmus.log" >&2; die "isthmus not ready within ${READY_TIMEOUT}s"; }
        sleep 0.2
    done
    # The route must answer over TLS, verified against the CA, before the scan starts.
    curl -fsS --noproxy '*' --max-time 5 --cacert "$WORK/tls/ca.pem" \
        --resolve "$HOST:$PORT:127.0.0.1" "https://$HOST:$PORT/" >/dev/null ||
        die "https://$HOST:$PORT/ does not answer"
    local errors
    errors=$(curl -fsS --noproxy '*' --max-time 5 "http://127.0.0.1:$ADMIN_PORT/config_dump" |
        jq -r '.diagnostics[]? | select(test(": error: "))')
    [[ -z $errors ]] || die "isthmus reports configuration errors: $errors"
}

run_testssl() {
    local testssl
    testssl=$(find_testssl)
    local version
    version=$("$testssl" --version 2>/dev/null | grep -oE 'testssl +[0-9][0-9.]*' | head -n1 | tr -s ' ' || true)
    log "${version:-testssl.sh} against $HOST:$PORT on 127.0.0.1 (isthmus: $ISTHMUS_BIN)"
    # testssl.sh's exit code counts failed checks of its own; the JSON decides here.
    # shellcheck disable=SC2086
    "$testssl" --severity MEDIUM --quiet --color 0 --warnings batch \
        --ip 127.0.0.1 --add-ca "$WORK/tls/ca.pem" --jsonfile "$WORK/findings.json" \
        $TESTSSL_ARGS "$HOST:$PORT" >"$WORK/testssl.txt" 2>&1 || true
    [[ -s $WORK/findings.json ]] || { tail -n 30 "$WORK/testssl.txt" >&2; die "testssl.sh wrote no JSON"; }
}

# Prints the summary and returns non-zero on any MEDIUM, HIGH or CRITICAL finding, or on a
# scan problem (WARN/FATAL entries mean a check could not run).
summarise() {
    local json=$WORK/findings.json
    # testssl.sh writes the JSON array without its closing bracket when it is interrupted.
    jq -e . "$json" >/dev/null 2>&1 || die "unreadable JSON in $json"
    local bad problems
    bad=$(jq '[.[] | select(.severity == "MEDIUM" or .severity == "HIGH" or .severity == "CRITICAL")] | length' "$json")
    problems=$(jq '[.[] | select(.severity == "WARN" or .severity == "FATAL")] | length' "$json")
    echo
    echo "== testssl.sh findings at MEDIUM or above (isthmus, ECDSA P-256, TLS 1.2 + 1.3) =="
    if ((bad == 0)); then
        echo "none"
    else
        jq -r '.[] | select(.severity == "MEDIUM" or .severity == "HIGH" or .severity == "CRITICAL")
               | "\(.severity)\t\(.id)\t\(.finding)"' "$json" | column -t -s $'\t'
    fi
    if ((problems > 0)); then
        echo
        echo "== scan problems =="
        jq -r '.[] | select(.severity == "WARN" or .severity == "FATAL") | "\(.severity)\t\(.id)\t\(.finding)"' "$json" |
            column -t -s $'\t'
    fi
    echo
    echo "== protocols and ciphers offered =="
    grep -E '^ (SSLv2|SSLv3|TLS 1(\.[0-3])?|NPN/SPDY|ALPN/HTTP2) ' "$WORK/testssl.txt" | sed 's/  */ /g' || true
    echo
    awk '/^ Has server cipher order/ {f = 1} f && /^ *$/ {f = 0} f' "$WORK/testssl.txt" || true
    echo
    grep -E '^ x[0-9a-f]+ ' "$WORK/testssl.txt" | sed 's/  */ /g' || true
    echo
    echo "== overall =="
    grep -E 'Overall Grade|Grade cap|Done ' "$WORK/testssl.txt" | sed 's/^ *//' || true
    echo "MEDIUM+ findings: $bad, scan problems: $problems"
    ((bad == 0 && problems == 0))
}

main() {
    ensure_tools
    find_isthmus
    WORK=$(mktemp -d /tmp/isthmus-testssl.XXXXXX)
    make_certificates
    write_config
    start_isthmus
    run_testssl
    summarise
}

main "$@"
