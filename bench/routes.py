#!/usr/bin/env python3
"""bench/routes.py: how Isthmus scales with the size of its route table.

For each table size (10 routes up to 100,000 routes over 1,000 hosts) it measures
  * start-up: the time from starting `isthmus run` to ready, and the phases of the
    first configuration (read and parse, compile, total) from its log line;
  * a one-route change: one VirtualService file edited, then SIGHUP; the time until the
    changed route answers, and the reload's own phases from its log line;
  * route lookup cost: CPU µs per proxied request (wrk, keep-alive) when the request hits
    the first route of the first host and the last route of the last host.

It is a benchmark, not a test: it prints a table and passes or fails nothing.

    cargo build --release -p isthmus
    python3 bench/routes.py                         # sizes 10 1000 10000 100000
    SIZES="10 100000" DURATION=5 python3 bench/routes.py

Knobs: SIZES, HOSTS (max hosts, default 1000), DURATION (s of each wrk run, default 5),
ISTHMUS_BIN, PROXY_CPU / LOAD_CPU (default 1 / 0). Needs nginx (the backend) and wrk.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ISTHMUS_BIN", os.path.join(ROOT, "target/release/isthmus"))
SIZES = [int(s) for s in os.environ.get("SIZES", "10 1000 10000 100000").split()]
MAX_HOSTS = int(os.environ.get("HOSTS", "1000"))
DURATION = int(os.environ.get("DURATION", "5"))
PROXY_CPU = os.environ.get("PROXY_CPU", "1")
LOAD_CPU = os.environ.get("LOAD_CPU", "0")
BACKEND_PORT = 18080
PORT = 18000
ADMIN = 18001
CLK_TCK = os.sysconf("SC_CLK_TCK")
APPLIED = re.compile(
    r"configuration applied.*generation=(\d+).*load_ms=([\d.]+).*compile_ms=([\d.]+).*total_ms=([\d.]+)"
)


def log(msg):
    print(f"[routes] {msg}", file=sys.stderr, flush=True)


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.002)
    raise SystemExit(f"timed out waiting for {what}")


def get(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return None, b""


def start_backend(work):
    conf = os.path.join(work, "backend.conf")
    with open(conf, "w") as f:
        f.write(
            f"""worker_processes 1; daemon off; pid {work}/backend.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{BACKEND_PORT}; location / {{ return 200 "ok\\n"; }} }} }}
"""
        )
    p = subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-c", conf, "-p", work],
                         stderr=subprocess.DEVNULL)
    wait_until(lambda: get(f"http://127.0.0.1:{BACKEND_PORT}/")[0] == 200, 10, "the backend")
    return p


def hosts_and_routes(size):
    hosts = min(size, MAX_HOSTS)
    return hosts, max(1, size // hosts)


def vs_file(host, routes, extra=False):
    """One VirtualService with `routes` prefix routes (and, with `extra`, a route /new/)."""
    lines = [
        "apiVersion: networking.istio.io/v1",
        "kind: VirtualService",
        f"metadata: {{name: h{host}, namespace: bench}}",
        "spec:",
        f"  hosts: [h{host}.bench.example]",
        "  gateways: [istio-system/gw]",
        "  http:",
    ]
    prefixes = [f"/r{r}/" for r in range(routes)] + (["/new/"] if extra else [])
    for prefix in prefixes:
        lines += [
            f"  - match: [{{uri: {{prefix: {prefix}}}}}]",
            f"    route: [{{destination: {{host: backend.bench, port: {{number: {BACKEND_PORT}}}}}}}]",
        ]
    return "\n".join(lines) + "\n"


def write_config(cfg, size):
    hosts, routes = hosts_and_routes(size)
    with open(os.path.join(cfg, "base.yaml"), "w") as f:
        f.write(
            f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*/*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: bench}}
spec:
  hosts: [backend.bench]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {BACKEND_PORT}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: bench}}
spec:
  host: backend.bench
  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}
"""
        )
    for h in range(hosts):
        with open(os.path.join(cfg, f"vs-{h}.yaml"), "w") as f:
            f.write(vs_file(h, routes))
    return hosts, routes


def applied_lines(logfile):
    with open(logfile, errors="replace") as f:
        return [APPLIED.search(line) for line in f if "configuration applied" in line]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wrk(host, path, pid):
    """CPU µs per request of `pid` and req/s while wrk hits host+path."""
    url = f"http://127.0.0.1:{PORT}{path}"
    base = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c32", "-H", f"Host: {host}"]
    subprocess.run(base + ["-d1", url], capture_output=True, check=True)  # warm-up
    t0 = cpu_ticks(pid)
    out = subprocess.run(base + [f"-d{DURATION}", url], capture_output=True, text=True,
                         check=True).stdout
    t1 = cpu_ticks(pid)
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} failed requests to {host}{path}")
    return (t1 - t0) * 1e6 / CLK_TCK / reqs, reqs / DURATION


def measure(size, work):  # noqa: PLR0914 (one run, many figures)
    cfg = os.path.join(work, f"cfg-{size}")
    os.makedirs(cfg)
    hosts, routes = write_config(cfg, size)
    logfile = os.path.join(work, f"isthmus-{size}.log")
    env = dict(os.environ, RUST_LOG="info", ISTHMUS_WORKERS="1", NO_COLOR="1")
    started = time.monotonic()
    with open(logfile, "w") as lf:
        proc = subprocess.Popen(
            ["taskset", "-c", PROXY_CPU, BIN, "run", "--config", cfg,
             "--bind", f"80=127.0.0.1:{PORT}", "--admin", f"127.0.0.1:{ADMIN}"],
            stdout=lf, stderr=lf, env=env)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{ADMIN}/healthz/ready")[0] == 200, 120,
                   "ready")
        ready_s = time.monotonic() - started
        first = applied_lines(logfile)[0]
        last_host = f"h{hosts - 1}.bench.example"
        # One route changes: the last host gets a route /new/.
        with open(os.path.join(cfg, f"vs-{hosts - 1}.yaml"), "w") as f:
            f.write(vs_file(hosts - 1, routes, extra=True))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: get(f"http://127.0.0.1:{PORT}/new/", last_host)[0] == 200, 60,
                   "the changed route")
        change_ms = (time.monotonic() - t0) * 1000
        wait_until(lambda: len(applied_lines(logfile)) >= 2, 10, "the reload's log line")
        second = applied_lines(logfile)[-1]
        cpu_first, rps_first = wrk("h0.bench.example", "/r0/", proc.pid)
        cpu_last, rps_last = wrk(last_host, f"/r{routes - 1}/", proc.pid)
        with open(f"/proc/{proc.pid}/status") as f:
            rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024
        return dict(size=hosts * routes, hosts=hosts, ready_s=ready_s,
                    load_ms=float(first.group(2)), compile_ms=float(first.group(3)),
                    total_ms=float(first.group(4)), change_ms=change_ms,
                    re_load_ms=float(second.group(2)), re_compile_ms=float(second.group(3)),
                    re_total_ms=float(second.group(4)), cpu_first=cpu_first,
                    cpu_last=cpu_last, rps_first=rps_first, rps_last=rps_last, rss=rss)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (apt-get install -y nginx-light wrk util-linux)")
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release -p isthmus")
    work = tempfile.mkdtemp(prefix="isthmus-routes-")
    backend = start_backend(work)
    rows = []
    try:
        for size in SIZES:
            log(f"{size} routes")
            rows.append(measure(size, work))
            log(str(rows[-1]))
    finally:
        backend.terminate()
        backend.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"binary: {BIN} ({time.ctime(os.path.getmtime(BIN))})")
    print("start-up: first configuration (read+parse, compile, total incl. apply) and time to ready;")
    print("change: one route edited, SIGHUP -> the new route answers (wall), and the reload's phases;")
    print("lookup: CPU µs per proxied request hitting the first / the last route (wrk -c32, keep-alive).\n")
    head = ("routes", "hosts", "parse_ms", "compile_ms", "total_ms", "ready_s", "chg_wall_ms",
            "chg_parse", "chg_compile", "chg_total", "µs_first", "µs_last", "last/first", "RSS_MB")
    print("".join(f"{h:>12}" for h in head))
    base = rows[0]["cpu_first"] if rows else 1
    for r in rows:
        vals = (r["size"], r["hosts"], r["load_ms"], r["compile_ms"], r["total_ms"],
                f"{r['ready_s']:.2f}", f"{r['change_ms']:.0f}", r["re_load_ms"],
                r["re_compile_ms"], r["re_total_ms"], f"{r['cpu_first']:.2f}",
                f"{r['cpu_last']:.2f}", f"{r['cpu_last'] / r['cpu_first']:.2f}x",
                f"{r['rss']:.0f}")
        print("".join(f"{v:>12}" for v in vals))
    print(f"\nlookup cost vs the smallest table (µs_last / µs_first of {rows[0]['size']} routes):")
    for r in rows:
        print(f"  {r['size']:>7} routes: {r['cpu_last'] / base:.2f}x")


if __name__ == "__main__":
    main()
