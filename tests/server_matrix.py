"""The WSGI servers our users run, each started the way its documentation says,
serving the traced test project on 127.0.0.1, and stopped the way its
documentation says (issue #12). ``Scenario.command`` builds the command line;
``ServerProcess`` starts it, waits until it answers, and times the stop.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import ROOT, poll_until_answers

APP = "tests.testproject.wsgi:traced"
ASGI_APP = "tests.testproject.asgi:application"
ASGI_SERVERS = ("uvicorn", "daphne", "hypercorn", "granian", "gunicorn+uvicorn")


@dataclass(frozen=True)
class Scenario:
    """One server in one mode, and how it is stopped."""

    server: str
    mode: str
    stop: signal.Signals
    args: tuple[str, ...] = ()
    grace: float = 0.0  # the server's own documented shutdown time, on top of flowtrace's
    processes: int = 1

    @property
    def name(self) -> str:
        return f"{self.server} {self.mode} {self.stop.name}".replace("  ", " ")

    @property
    def asgi(self) -> bool:
        return self.server in ASGI_SERVERS

    @property
    def service(self) -> str:
        return "srv-" + "-".join(self.name.split()).replace("--", "").replace("=", "")

    def command(self, port: int, workdir: Path) -> list[str]:
        bind = f"127.0.0.1:{port}"
        bin_dir = Path(sys.executable).parent
        if self.server == "gunicorn":
            return [sys.executable, "-m", "gunicorn", "--bind", bind, "--graceful-timeout", "5",
                    "--workers", str(self.processes), *self.args, APP]  # fmt: skip
        if self.server == "uwsgi":
            return [str(bin_dir / "uwsgi"), "--http-socket", bind, "--module", APP, "--master",
                    "--processes", str(self.processes), "--need-app", "--strict",
                    "--chdir", str(ROOT), *self.args]  # fmt: skip
        if self.server == "waitress":
            return [str(bin_dir / "waitress-serve"), f"--listen={bind}", APP]
        if self.server == "mod_wsgi":
            # Apache refuses to serve as root: its children and the daemons run as www-data
            user = ["--user", "www-data", "--group", "www-data"] if os.geteuid() == 0 else []
            return [str(bin_dir / "mod_wsgi-express"), "start-server", *user,
                    str(ROOT / "tests" / "testproject" / "wsgi_traced.py"), "--host", "127.0.0.1",
                    "--port", str(port), "--server-root", str(workdir / "apache"),
                    "--processes", str(self.processes), "--threads", "5",
                    "--shutdown-timeout", "5", "--log-to-terminal", *self.args]  # fmt: skip
        if self.server == "runserver":
            return [sys.executable, "-m", "django", "runserver", bind, *self.args]
        if self.server == "uvicorn":
            return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(self.processes), *self.args, ASGI_APP]  # fmt: skip
        if self.server == "daphne":
            return [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), *self.args,
                    ASGI_APP]  # fmt: skip
        if self.server == "hypercorn":
            return [str(bin_dir / "hypercorn"), "--bind", bind, "--workers",
                    str(self.processes), *self.args, ASGI_APP]  # fmt: skip
        if self.server == "granian":
            return [str(bin_dir / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", str(self.processes), *self.args,
                    ASGI_APP]  # fmt: skip
        if self.server == "gunicorn+uvicorn":
            return [sys.executable, "-m", "gunicorn", "--bind", bind, "--graceful-timeout", "5",
                    "--workers", str(self.processes), "--worker-class",
                    "uvicorn_worker.UvicornWorker", *self.args, ASGI_APP]  # fmt: skip
        raise ValueError(self.server)


def matrix() -> list[Scenario]:
    term, interrupt = signal.SIGTERM, signal.SIGINT
    return [
        Scenario("gunicorn", "sync", term, grace=0.0, processes=2),
        Scenario("gunicorn", "sync", interrupt, processes=2),
        Scenario("gunicorn", "gthread", term, ("--worker-class", "gthread", "--threads", "4"),
                 processes=2),
        Scenario("gunicorn", "gevent", term, ("--worker-class", "gevent"), processes=2),
        Scenario("gunicorn", "--preload", term, ("--preload",), processes=2),
        Scenario("gunicorn", "--max-requests 7", term, ("--max-requests", "7"), processes=2),
        Scenario("uwsgi", "default", interrupt, processes=2),
        Scenario("uwsgi", "--lazy-apps", interrupt, ("--lazy-apps",), processes=2),
        Scenario("uwsgi", "--enable-threads", interrupt, ("--enable-threads",), processes=2),
        Scenario("uwsgi", "--die-on-term", term, ("--die-on-term",), processes=2),
        Scenario("uwsgi", "1 process", interrupt, processes=1),
        Scenario("waitress", "", term),
        Scenario("waitress", "", interrupt),
        Scenario("mod_wsgi", "daemon", term, grace=5.0, processes=2),
        Scenario("runserver", "autoreload", interrupt),
    ]  # fmt: skip


def asgi_matrix() -> list[Scenario]:
    """The ASGI servers (issue #16), each stopped as its documentation says."""
    term, interrupt = signal.SIGTERM, signal.SIGINT
    return [
        Scenario("uvicorn", "1 process", term),
        Scenario("uvicorn", "1 process", interrupt),
        Scenario("uvicorn", "--workers 2", term, processes=2),
        Scenario("daphne", "", term),
        Scenario("daphne", "", interrupt),
        Scenario("hypercorn", "", term),
        Scenario("hypercorn", "--workers 2", term, processes=2),
        Scenario("granian", "", term),
        Scenario("granian", "--workers 2", interrupt, processes=2),
        Scenario("gunicorn+uvicorn", "UvicornWorker", term, processes=2),
    ]


def available(scenario: Scenario) -> str | None:
    """None if this server can run here, else why not."""
    bin_dir = Path(sys.executable).parent
    needs = {"uwsgi": bin_dir / "uwsgi", "waitress": bin_dir / "waitress-serve",
             "mod_wsgi": bin_dir / "mod_wsgi-express", "daphne": bin_dir / "daphne",
             "hypercorn": bin_dir / "hypercorn", "granian": bin_dir / "granian"}  # fmt: skip
    path = needs.get(scenario.server)
    if path is not None and not path.exists():
        return f"{path.name} is not installed (pip install .[servers])"
    if (
        scenario.server == "mod_wsgi"
        and shutil.which("apache2") is None
        and not Path("/usr/sbin/apache2").exists()
    ):
        return "Apache httpd (Debian package apache2-dev) is not installed"
    return None


@dataclass
class ServerProcess:
    scenario: Scenario
    env: dict[str, str]
    port: int
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flowtrace-srv-")))
    proc: subprocess.Popen[bytes] | None = None
    stopped_in: float = 0.0

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        if self.scenario.server == "mod_wsgi" and os.geteuid() == 0:
            env["FLOWTRACE_DEMO_DB"] = self._readable_by_daemons(env["FLOWTRACE_DEMO_DB"])
        self._log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.scenario.command(self.port, self.workdir), cwd=ROOT, env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            poll_until_answers(lambda: self.request("/hello"), self.proc, timeout, 0.1)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.scenario.name} did not start:\n{self.log()}") from None

    def _readable_by_daemons(self, database: str) -> str:
        """mod_wsgi's daemons run as www-data: they must reach the interpreter (pyenv
        keeps it under /root: give others the right to pass through /root, not to
        list it) and a copy of the test database."""
        for parent in Path(sys.base_prefix).parents:
            if parent == Path("/root") and parent.stat().st_mode & 0o001 == 0:
                parent.chmod(parent.stat().st_mode | 0o001)
        self.workdir.chmod(0o755)
        copy = self.workdir / "db.sqlite3"
        shutil.copyfile(database, copy)
        copy.chmod(0o666)
        return str(copy)

    def request(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        """The scenario's stop signal, then a bounded wait (SIGKILL after it)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            started = time.monotonic()
            if self.scenario.server == "runserver":  # Ctrl-C reaches the whole group
                os.killpg(proc.pid, self.scenario.stop)
            else:
                proc.send_signal(self.scenario.stop)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            self.stopped_in = time.monotonic() - started
        self._wait_for_group()
        self._log.close()
        return proc.returncode

    def _wait_for_group(self) -> None:
        """Workers (uWSGI's, Apache's) may outlive the parent by a moment: bounded."""
        assert self.proc is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return (self.workdir / "server.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def metric_totals(metric_requests: list[Any], service: str) -> dict[str, int]:
    """Per metric, the sum over processes (service.instance.id) of each process's last
    cumulative count (histograms) or value (sums)."""
    last: dict[tuple[str, str], dict[tuple[Any, ...], int]] = {}
    for request in metric_requests:
        for rm in request.resource_metrics:
            attrs = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            if attrs.get("service.name") != service:
                continue
            instance = attrs.get("service.instance.id", "")
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points
                    series = last.setdefault((metric.name, instance), {})
                    for point in points:
                        key = tuple(sorted((kv.key, str(kv.value)) for kv in point.attributes))
                        series[key] = point.count if kind == "histogram" else point.as_int
    totals: dict[str, int] = {}
    for (name, _), series in last.items():
        totals[name] = totals.get(name, 0) + sum(series.values())
    return totals
