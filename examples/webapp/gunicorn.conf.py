"""gunicorn configuration of the example web app: ``gunicorn -c gunicorn.conf.py app:app``.

Threaded workers with the app preloaded in the master: one llmpool client is
built (and warmed) once, and every forked worker inherits it; llmpool resets
what must not cross a fork. Every setting can be overridden on the command
line (``--workers 4``) or with the WEBAPP_* variables below.
"""

from __future__ import annotations

import os
import tempfile

bind = os.environ.get("WEBAPP_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("WEBAPP_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEBAPP_THREADS", "8"))
preload_app = True
# A worker is recycled after this many requests (0: never); the jitter keeps
# the workers from restarting together.
max_requests = int(os.environ.get("WEBAPP_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
# A stopping worker finishes the requests it holds: give streams time to end.
graceful_timeout = 30
keepalive = 5
# gunicorn >= 25.1 opens a control socket at $HOME/.gunicorn/gunicorn.ctl, one path
# for every instance of the user; this app does not use it (older gunicorn
# ignores the name).
control_socket_disable = True

# Size llmpool's pool from the thread count: a thread makes one upstream call at
# a time, so `threads` connections per worker never make a thread wait.
# (The environment wins over llmpool.yaml; an explicit value is kept.)
os.environ.setdefault("LLMPOOL_MAX_CONNECTIONS", str(threads))

# prometheus_client's multiprocess mode: every process writes its metrics to
# files in this directory, and /metrics adds them up. It must be set before
# prometheus_client is imported (the app imports it through the metrics plugin)
# and must start empty: without it, a fresh directory is made for this run.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="llmpool-webapp-metrics-")


def child_exit(server, worker):
    """A worker ended (recycled, crashed or killed): retire its live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
