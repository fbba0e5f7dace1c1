"""What sits between a download Job and its hub in a corporate network, on loopback: a test CA that signs a
hub's TLS certificate, and an HTTP CONNECT proxy that alone can resolve the hub's name."""

from __future__ import annotations

import select
import socket
import socketserver
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

# RFC 6761: `.test` never resolves, so only the proxy's own map can reach this host.
HUB_HOST = "hub.modelcache.test"


@dataclass(frozen=True)
class PrivateCA:
    ca_cert: Path
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_test_ca(directory: Path, host: str = HUB_HOST) -> PrivateCA:
    """A CA and a server certificate it signs for `host` (openssl, as the control plane's PKI uses)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "hub.key", directory / "hub.csr", directory / "hub.crt"
    ext = directory / "hub.ext"
    ext.write_text(f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,"
                   "keyEncipherment\nextendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=modelcache test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(ca_key), "-out", str(ca_cert))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return PrivateCA(ca_cert, cert, key)


@dataclass
class ConnectProxy:
    """A loopback HTTP proxy that serves only CONNECT, to the hosts in `routes` (name -> address). `host` is
    the address it listens on (the real node's pods reach the host on the pod bridge's)."""

    routes: dict[str, str]
    host: str = "127.0.0.1"
    tunnels: list[str] = field(default_factory=list)  # "host:port" of every CONNECT it opened
    refused: list[str] = field(default_factory=list)
    _server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> ConnectProxy:
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = self.rfile.readline().decode("latin-1").split()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # the request's headers
                if len(request) != 3 or request[0] != "CONNECT":
                    proxy.refused.append(" ".join(request))
                    self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    return
                host, _, port = request[1].rpartition(":")
                if host not in proxy.routes:
                    proxy.refused.append(request[1])
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                upstream = socket.create_connection((proxy.routes[host], int(port)), timeout=30)
                proxy.tunnels.append(request[1])
                self.wfile.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                self.wfile.flush()
                _pipe(self.connection, upstream)

        self._server = socketserver.ThreadingTCPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    with upstream:
        sockets = [client, upstream]
        while True:
            readable, _, _ = select.select(sockets, [], [], 30)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(1 << 16)
                if not data:
                    return
                (upstream if sock is client else client).sendall(data)
