"""The local control plane's certificates (made with openssl) and the kubeconfigs that use them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, an admin client cert and the ServiceAccount signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=modelcache-dev-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    (pki / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1\n"
        "extendedKeyUsage=serverAuth\n")
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
        ("admin", "/O=system:masters/CN=admin", "client.ext"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "3650", "-out", f"{name}.crt", "-extfile", ext, cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def make_client_cert(pki: Path, name: str, user: str, groups: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A client certificate signed by the cluster CA: CN is the user name, each O a group."""
    subject = "".join(f"/O={group}" for group in groups) + f"/CN={user}"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=pki)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "3650", "-out", f"{name}.crt", "-extfile", "client.ext", cwd=pki)
    return pki / f"{name}.crt", pki / f"{name}.key"


def write_kubeconfig(path: Path, server: str, pki: Path, cert_name: str = "admin") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modelcache-dev", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": cert_name, "user": {
            "client-certificate": str(pki / f"{cert_name}.crt"), "client-key": str(pki / f"{cert_name}.key")}}],
        "contexts": [{"name": "modelcache-dev", "context": {"cluster": "modelcache-dev", "user": cert_name}}],
        "current-context": "modelcache-dev",
    }
    path.write_text(yaml.safe_dump(config))
