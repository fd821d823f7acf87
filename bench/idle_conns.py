#!/usr/bin/env python3
"""Open N keep-alive connections to HOST:PORT, make one request on each, and hold them idle.

    idle_conns.py PORT N HOST_HEADER [tls|h2c]

With `tls`, each connection is HTTPS (TLS 1.3, certificate not verified: the bench's own).
With `h2c`, each is HTTP/2 with prior knowledge: one GET on stream 1, written frame by frame.

Prints "ready <open>" once every connection has had its response, then holds them until
stdin closes (bench/run.sh closes it after reading the proxy's RSS). Used to measure
memory per idle keep-alive connection; not a test.
"""

import selectors
import socket
import ssl
import sys
import time

BATCH = 100


def h2c_request(host):
    """The HTTP/2 preface, empty SETTINGS and `GET /` on stream 1 (HPACK without Huffman)."""

    def frame(kind, flags, stream, payload):
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    # :method GET, :scheme http, :path /, then :authority (static index 1) as a literal.
    block = bytes([0x82, 0x86, 0x84, 0x01, len(host)]) + host.encode()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    return preface + frame(0x4, 0, 0, b"") + frame(0x1, 0x5, 1, block)


def h2_complete(data):
    """Whether `data` (frames from the server) holds the end of stream 1's response."""
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        kind, flags, stream = data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        if len(data) < 9 + length:
            return False
        if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:
            return True
        data = data[9 + length :]
    return False


def complete(response):
    """Whether `response` holds a whole response with a Content-Length body."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def main():
    port, n, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    tls = None
    if sys.argv[4:5] == ["tls"]:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    done = complete
    if sys.argv[4:5] == ["h2c"]:
        request, done = h2c_request(host), h2_complete
    sel = selectors.DefaultSelector()
    socks, waiting = [], {}
    # Connect in batches so the listen backlog never overflows.
    for start in range(0, n, BATCH):
        for _ in range(min(BATCH, n - start)):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if tls:
                s = tls.wrap_socket(s, server_hostname=host)
            s.sendall(request)
            s.setblocking(False)
            socks.append(s)
            waiting[s] = b""
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                if not data:
                    sys.exit(f"connection closed by the proxy after {len(socks)} opened")
                waiting[s] += data
                if done(waiting[s]):
                    del waiting[s]
                    sel.unregister(s)
        if waiting:
            sys.exit(f"{len(waiting)} responses did not arrive within 30 s")
    print(f"ready {len(socks)}", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
