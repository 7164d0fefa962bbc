"""The compose stack's nginx config in front of gunicorn: queue time is real."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.otlp_receiver import Receiver
from tests.prometheus import free_port
from tests.servers import GunicornServer, poll_until_answers, stop_process
from tests.traces import fetch

ROOT = Path(__file__).resolve().parent.parent


def _nginx() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is required in CI (scripts/system-deps.sh installs it)")
        pytest.skip("nginx not installed: run `make test` (scripts/system-deps.sh) as root")
    return found


class _Proxy:
    """Looks like a GunicornServer to `fetch`: requests go through nginx."""

    def __init__(self, port: int) -> None:
        self.port = port

    request = GunicornServer.request


def test_nginx_request_start_becomes_the_queue_stage(
    server: GunicornServer, receiver: Receiver
) -> None:
    nginx = _nginx()
    port = free_port()
    config = (ROOT / "deploy/nginx/nginx.conf").read_text()
    config = config.replace("server app:8000;", f"server 127.0.0.1:{server.port};")
    config = config.replace("listen 80;", f"listen 127.0.0.1:{port};")
    with tempfile.TemporaryDirectory(prefix="flowtrace-nginx-") as tmp:
        config = config.replace("http {", f"http {{\n    access_log off;\n"
                                f"    client_body_temp_path {tmp}/body;\n"
                                f"    proxy_temp_path {tmp}/proxy;", 1)  # fmt: skip
        Path(tmp, "nginx.conf").write_text(config)
        proc = subprocess.Popen(
            [nginx, "-p", tmp, "-c", f"{tmp}/nginx.conf",
             "-g", f"daemon off; pid {tmp}/nginx.pid; error_log stderr;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            proxy = _Proxy(port)
            poll_until_answers(lambda: proxy.request("/hello"), proc, timeout=10)
            status, _, root = fetch(proxy, receiver, "/t/slow-view?ms=5")
        finally:
            stop_process(proc, 10)
    assert status == 200
    [queue] = [s for s in root.walk() if s.stage == "queue"]
    # nginx's ${msec} has millisecond resolution: the queue is 0..a few ms here.
    assert 0 <= queue.duration < 50_000_000
    assert root.start == queue.start and queue.end <= root.children[1].start
