"""Real redis-server processes on 127.0.0.1 as platform teams run them: plain, TLS, behind a
sentinel, and a three-node cluster. Each is started in a folder of its own and stopped by the
caller (``stop``); nothing is saved to disk."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as sync_redis

from tests.support.gateway import free_port

__all__ = ["RedisServer", "TlsFiles", "start_cluster", "start_redis", "start_sentinel", "tls_files"]

_NO_DISK = ("--save", "", "--appendonly", "no")


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install -y redis-server)")
    return found


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path
    log: Path
    extra: list[RedisServer] = field(default_factory=list)  # nodes started with it

    def stop(self) -> None:
        for server in [self, *self.extra]:
            if server.proc.poll() is None:
                server.proc.terminate()
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(10)


def _wait_ready(client: sync_redis.Redis, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.ping():
                return
        except (sync_redis.ConnectionError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)


def start_redis(
    folder: Path, *args: str, tls: TlsFiles | None = None, port: int | None = None
) -> RedisServer:
    """A redis-server on ``port`` or a free one (the TLS port when ``tls`` is given: no plain
    port then)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = folder / "redis.log"
    if tls is None:
        listen = ["--port", str(port)]
    else:
        listen = [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
        ]  # fmt: skip
    proc = subprocess.Popen(
        [_binary("redis-server"), *listen, "--bind", "127.0.0.1", "--dir", str(folder),
         "--logfile", str(log), *_NO_DISK, *args],
    )  # fmt: skip
    ssl = {"ssl": True, "ssl_ca_certs": str(tls.ca)} if tls is not None else {}
    _wait_ready(sync_redis.Redis(port=port, socket_timeout=1, **ssl), proc, log)  # type: ignore[arg-type]
    return RedisServer(port, proc, folder, log)


def start_sentinel(folder: Path, master: RedisServer, name: str = "tiergate") -> RedisServer:
    """``redis-server --sentinel`` watching ``master`` under ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
        f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {name} 1000\n"
        f"sentinel failover-timeout {name} 5000\n"
    )
    proc = subprocess.Popen([_binary("redis-server"), str(conf), "--sentinel"])
    sentinel = RedisServer(port, proc, folder, folder / "sentinel.log")
    client = sync_redis.Redis(port=port, socket_timeout=1)
    _wait_ready(client, proc, sentinel.log)
    deadline = time.monotonic() + 10
    while client.sentinel_get_master_addr_by_name(name) is None:
        assert time.monotonic() < deadline, "the sentinel does not know its master"
        time.sleep(0.05)
    return sentinel


def start_cluster(folder: Path, nodes: int = 3) -> RedisServer:
    """``nodes`` masters with ``--cluster-enabled yes``, joined by ``redis-cli --cluster create``;
    the first is returned, the others are its ``extra``."""
    servers = [
        start_redis(
            folder / f"node{index}",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(folder / f"node{index}" / "nodes.conf"),
            # The bus port: by default the port + 10000, which a free high port may not have.
            "--cluster-port",
            str(free_port()),
            "--cluster-node-timeout",
            "2000",
        )
        for index in range(nodes)
    ]
    first, rest = servers[0], servers[1:]
    first.extra = rest
    try:
        subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{server.port}" for server in servers),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        client = sync_redis.Redis(port=first.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the cluster did not become ok"
            time.sleep(0.1)
    except BaseException:
        first.stop()
        raise
    return first


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl = _binary("openssl")
    ca_key, ca, key, csr, cert = (
        folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=tiergate test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return TlsFiles(ca, cert, key)
