"""A real PostgreSQL server for tests: Debian's binaries, a data directory in a
temporary folder, a socket in that folder and a loopback port, no service.

PostgreSQL refuses to run as root; as root (CI), the server runs as the
``postgres`` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    host: str
    port: int
    user: str

    def database(self, name: str, **extra: object) -> dict[str, object]:
        """A Django DATABASES entry for database ``name`` on this server."""
        return {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": self.user,
                "HOST": self.host, "PORT": str(self.port), **extra}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_postgres(
    databases: tuple[str, ...] = ("flowtrace", "flowtrace_other"),
) -> Iterator[Postgres]:
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (Debian package postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="flowtrace-pg-"))
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()
    user = "postgres" if as_root else os.environ.get("USER", "postgres")

    def run(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
        "-w", "-t", "60", "start")  # fmt: skip
    try:
        for name in databases:
            run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, name)
        yield Postgres("127.0.0.1", port, user)
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "-t", "30", "stop"], capture_output=True, timeout=60)  # fmt: skip
        deadline = time.monotonic() + 10
        while (data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # pg_ctl -w already waited; this only bounds a slow unlink
        shutil.rmtree(folder, ignore_errors=True)
