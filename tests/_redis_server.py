"""A private redis-server for tests and benchmarks: loopback only, in a temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

#: redis-server arguments for each persistence mode.
PERSISTENCE = {
    "none": ["--save", "", "--appendonly", "no"],
    # Snapshots only when the test says SAVE (as the default "save" rules
    # would, later): the grants after the last snapshot are lost by a crash.
    "rdb": ["--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"],
    "aof": ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``start()`` runs redis-server on 127.0.0.1:port, by default without
    persistence; ``persistence`` is a key of PERSISTENCE, ``password`` sets
    requirepass. A restart (``kill()`` or ``stop()``, then ``start()``) keeps
    the port and the directory, so RDB and AOF files are loaded again."""

    def __init__(self, port: Optional[int] = None, persistence: str = "none",
                 password: Optional[str] = None) -> None:
        self.binary = shutil.which("redis-server")
        self.port = port or free_port()
        self.persistence = persistence
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="lockwise-redis-")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout: float = 10.0) -> None:
        assert self.binary, "redis-server is not installed"
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                *PERSISTENCE[self.persistence], "--dir", self.dir, "--protected-mode", "yes"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                    # -NOAUTH: up, and asking for the password; -LOADING: not yet
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
                    time.sleep(0.02)
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """kill -9 (a crash: nothing is saved) and wait for the process."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)  # in case it was paused
            except OSError:
                pass
            proc.kill()
            proc.wait(10)

    kill = stop

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections (the kernel does) but never answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"
