#!/usr/bin/env python3
"""Docker API version-downgrading proxy (stdlib only).

Debian bookworm's docker.io (20.10) supports API <= 1.41, but bollard 0.20 (used by
testcontainers 0.27) always sends /v1.52/... and never negotiates. This proxy listens on a
unix socket, rewrites the request-line path prefix /vX.Y/ (when newer than MAX) to /v1.41/,
and forwards everything else unchanged to the real dockerd socket.

usage: docker-api-proxy.py LISTEN_SOCKET UPSTREAM_SOCKET
"""
import os
import re
import socket
import sys
import threading

MAX_MINOR = 41
VER_RE = re.compile(rb"^([A-Z]+ )/v1\.(\d+)(/)")


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self):
        out, self.buf = self.buf, b""
        return out


def handle(client, upstream_path):
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(upstream_path)
    except OSError:
        client.close()
        return
    # responses: raw pipe upstream -> client
    t = threading.Thread(target=pipe, args=(up, client), daemon=True)
    t.start()
    r = Reader(client)
    try:
        while True:
            head = r.until(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            m = VER_RE.match(lines[0])
            if m and int(m.group(2)) > MAX_MINOR:
                lines[0] = VER_RE.sub(rb"\1/v1.%d\3" % MAX_MINOR, lines[0], count=1)
            head = b"\r\n".join(lines)
            headers = {}
            for ln in lines[1:]:
                if b":" in ln:
                    k, v = ln.split(b":", 1)
                    headers[k.strip().lower()] = v.strip()
            up.sendall(head)
            if b"upgrade" in headers or b"upgrade" in headers.get(b"connection", b"").lower():
                # hijacked stream (attach/exec): raw pipe from here on
                rest = r.rest()
                if rest:
                    up.sendall(rest)
                pipe(client, up)
                break
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                while True:
                    size_line = r.until(b"\r\n")
                    up.sendall(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        # trailers until empty line
                        while True:
                            tl = r.until(b"\r\n")
                            up.sendall(tl)
                            if tl == b"\r\n":
                                break
                        break
                    up.sendall(r.exactly(size + 2))
            elif b"content-length" in headers:
                n = int(headers[b"content-length"])
                while n > 0:
                    if not r.buf:
                        r.fill()
                    chunk = r.buf[:n]
                    r.buf = r.buf[len(chunk):]
                    up.sendall(chunk)
                    n -= len(chunk)
    except (EOFError, OSError, ValueError):
        pass
    try:
        up.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    t.join()
    client.close()
    up.close()


def main():
    listen_path, upstream_path = sys.argv[1], sys.argv[2]
    try:
        os.unlink(listen_path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen_path)
    os.chmod(listen_path, 0o660)
    srv.listen(128)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c, upstream_path), daemon=True).start()


if __name__ == "__main__":
    main()
