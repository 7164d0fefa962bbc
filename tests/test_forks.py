"""Forks flowtrace did not see coming, gevent's hub, Prometheus in several
processes (issue #11 items 14-15, issue #12's fork detection).

uWSGI forks its workers from C, so Python's ``os.register_at_fork`` hooks do
not run; ``libc.fork()`` through ctypes does exactly that here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.otlp_receiver import Receiver
from tests.servers import ROOT


def _run(script: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update({"PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.testproject.settings",
                 "FLOWTRACE_STRICT": "1", **env})  # fmt: skip
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=full,
                          text=True, capture_output=True, timeout=timeout)  # fmt: skip


_C_FORK = """
    import ctypes, os, sys
    from django.core.wsgi import get_wsgi_application
    from flowtrace import FlowTrace
    from tests.wsgi_client import call
    app = FlowTrace(get_wsgi_application())   # flowtrace sets the SDK up (OTLP)
    for _ in range(5):
        call(app, "/hello", query="who=parent")  # the parent exported: connection open
    app.flush()
    release, wait = os.pipe()
    pid = ctypes.CDLL(None).fork()           # a fork Python's hooks never hear of
    if pid == 0:
        for _ in range(7):
            call(app, "/hello/", query="who=child")
        app._pipeline.flush()                # spans sent; metrics left to the reader thread
        os.read(release, 1)                  # until the test saw the child's metrics
        os._exit(0)
    print("child serving", flush=True)
    sys.stdin.readline()
    os.write(wait, b"x")
    os.waitpid(pid, 0)
    for _ in range(3):
        call(app, "/hello", query="who=parent")
    app.flush()
    print("ok", flush=True)
"""


def test_a_fork_that_bypasses_pythons_hooks_loses_nothing(receiver: Receiver) -> None:
    before = {s.span_id for s in receiver.spans}
    metrics_before = len(receiver.metric_requests)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.testproject.settings",
                "FLOWTRACE_STRICT": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_METRIC_EXPORT_INTERVAL": "100", "OTEL_SERVICE_NAME": "c-fork"})  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_C_FORK)], cwd=ROOT, env=env,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    # the child's own metric reader thread ran (restarted by flowtrace): its requests
    # (the only 404s: /hello/ has no route) were counted and exported periodically
    def child_requests() -> int:
        total = 0
        for request in receiver.metric_requests[metrics_before:]:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == "flowtrace.request.duration":
                            total = max(
                                [total]
                                + [
                                    p.count
                                    for p in m.histogram.data_points
                                    if any(
                                        a.key == "http.response.status_code"
                                        and a.value.int_value == 404
                                        for a in p.attributes
                                    )
                                ]
                            )
        return total

    try:
        assert proc.stdout.readline().strip() == "child serving"
        receiver.wait_for(lambda: child_requests() >= 7)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "ok", err

    def roots() -> list[Any]:
        return [s for s in receiver.spans if s.kind == 2 and s.span_id not in before
                and s.resource.get("service.name") == "c-fork"]  # fmt: skip

    receiver.wait_for(lambda: len(roots()) >= 15)
    assert len(roots()) == 15
    assert sorted(s.attributes["url.path"] for s in roots()) == ["/hello"] * 8 + ["/hello/"] * 7
    # each once, and the child drew its own ids (random was reseeded for it)
    assert len({s.span_id for s in roots()}) == len({s.trace_id for s in roots()}) == 15
    # ... and is its own service instance, in its spans and in its metrics
    instances = {s.attributes["url.path"]: s.resource["service.instance.id"] for s in roots()}
    assert instances["/hello"] != instances["/hello/"]
    requests = receiver.metric_requests[metrics_before:]
    metric_instances = {kv.value.string_value for request in requests
                        for rm in request.resource_metrics for kv in rm.resource.attributes
                        if kv.key == "service.instance.id"}  # fmt: skip
    assert instances["/hello/"] in metric_instances


_GEVENT = """
    from gevent import monkey; monkey.patch_all()
    import gevent, time
    from django.core.wsgi import get_wsgi_application
    from flowtrace import FlowTrace
    from tests.wsgi_client import call
    app = FlowTrace(get_wsgi_application(), export_interval=60)
    for _ in range(2000):
        call(app, "/db")                     # 2000 requests wait for the export greenlet
    gaps = []
    def ticker():
        last = time.perf_counter()
        for _ in range(400):
            gevent.sleep(0.001)
            now = time.perf_counter(); gaps.append(now - last); last = now
    t = gevent.spawn(ticker)
    gevent.sleep(0.005)
    app._pipeline._wake.set()                # the drain starts while the ticker runs
    t.join()
    app._pipeline.flush()
    print(f"{max(gaps) * 1000:.2f} {app._pipeline.processed}")
"""


def test_the_export_greenlet_never_holds_the_hub_long(receiver: Receiver) -> None:
    done = _run(_GEVENT, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                          "OTEL_METRICS_EXPORTER": "none"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    worst_ms, processed = done.stdout.split()
    print(f"gevent: worst 1 ms-ticker gap during a 2000-request drain: {worst_ms} ms")
    assert int(processed) == 2000
    assert float(worst_ms) < 12  # 2 ms slices (+ one request's work, + the machine's noise)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_PROMETHEUS = """
    import os, sys, time, urllib.request
    from django.core.wsgi import get_wsgi_application
    from flowtrace import FlowTrace
    from tests.wsgi_client import call
    app = FlowTrace(get_wsgi_application())
    call(app, "/hello")
    app._pipeline.flush()
    print("active" if app._active else "inactive", flush=True)
    if sys.argv[-1] == "serve":
        sys.stdin.readline()                 # until the second process is done
"""


def test_prometheus_in_two_processes_is_refused_clearly_not_fatally(receiver: Receiver) -> None:
    port = _free_port()
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
           "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update({"PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.testproject.settings",
                 **env})  # fmt: skip
    first = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_PROMETHEUS), "serve"],
                             cwd=ROOT, env=full, text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "active"
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            text = page.read().decode()
        assert "flowtrace_request_duration_seconds_count" in text
        second = _run(_PROMETHEUS, env)
        assert second.returncode == 0 and second.stdout.strip() == "active", second.stderr
        lines = [line for line in second.stderr.splitlines() if "Prometheus" in line]
        assert len(lines) == 1 and "cannot serve Prometheus metrics" in lines[0]
    finally:
        assert first.stdin is not None
        first.stdin.write("\n")
        first.stdin.flush()
        first.wait(30)
        for pipe in (first.stdin, first.stdout, first.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize("python_fork", [True, False])
def test_after_a_fork_the_direct_sink_forgets_the_parents_spans_and_socket(
    python_fork: bool,
) -> None:
    script = f"""
        import ctypes, os
        from flowtrace.export.direct import DirectSpanSink
        from opentelemetry.sdk.trace import TracerProvider
        sink = DirectSpanSink(TracerProvider())
        sink._pending.append(b"parent's span")
        sink.sender._conn = object.__new__(__import__("http.client").client.HTTPConnection)
        sink.sender._conn.sock = None
        if {python_fork}:
            pid = os.fork()
        else:
            pid = ctypes.CDLL(None).fork()
            if pid == 0:
                sink.after_fork(False)      # what the pipeline's pid check triggers
        if pid == 0:
            os.write(1, f"{{len(sink._pending)}} {{sink.sender._conn is None}}".encode())
            os._exit(0)
        os.waitpid(pid, 0)
    """
    if python_fork:  # os.fork runs the hooks the pipeline registered; here: the sink's
        script = script.replace("sink = DirectSpanSink(TracerProvider())",
                                "sink = DirectSpanSink(TracerProvider())\n"
                                "        os.register_at_fork(after_in_child="
                                "lambda: sink.after_fork(True))")  # fmt: skip
    done = _run(script, {})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 True"
