"""gunicorn configuration for production: `gunicorn -c gunicorn.conf.py`.

Why these choices:
- Uvicorn workers (`carbon_optimizer.worker.EdgeUvicornWorker`: the maintained
  `uvicorn_worker.UvicornWorker` plus header deadline, URL/header bounds, a per-worker connection
  bound, problem+json rejects and draining, see that module) running the app factory per worker
  (`create_app()` call syntax): every worker builds its own clients in the lifespan after the
  fork, nothing is shared across processes but Redis.
- `CARBON_OPTIMIZER_EDGE__METRICS_PORT` set: gunicorn also binds that port and `/metrics` is
  served only there (the Service's `metrics` port, never routed by the Ingress).
- All knobs come from the same Settings as the app (`CARBON_OPTIMIZER_SERVER__*`, e.g.
  `CARBON_OPTIMIZER_SERVER__WORKERS=4`); gunicorn's own `GUNICORN_CMD_ARGS` still overrides them.
- Prometheus multiprocess mode: each worker writes its metrics to files in
  `PROMETHEUS_MULTIPROC_DIR` and `/metrics` aggregates them. The directory is wiped when the
  master starts (stale files from a previous run would be summed in), and in `child_exit` a dead
  worker's files are folded into one archive per type and deleted
  (`metrics_files.retire_worker_metrics`), so recycling does not fill the directory. Point it at a
  tmpfs/emptyDir: the root FS may be read-only.
- The access log is the app's (written by its edge, `api/edge.py`: JSON with request id and client id), so
  gunicorn's access log stays off; gunicorn's and the workers' own logs are JSON too.
- `forwarded_allow_ips` is empty: the app alone decides whom to believe for `X-Forwarded-For`
  (`CARBON_OPTIMIZER_TRUSTED_PROXIES`), so uvicorn must not rewrite the client address first.
- Graceful shutdown: on SIGTERM workers stop accepting, finish in-flight requests and exit;
  gunicorn kills what is left after `graceful_timeout`. Keep Kubernetes'
  `terminationGracePeriodSeconds` above preStop sleep + `graceful_timeout`.
- `max_requests` + jitter recycles workers now and then (bounded memory growth) without all of
  them restarting at once; a recycling worker drains its keep-alive connections for
  `CARBON_OPTIMIZER_EDGE__DRAIN_GRACE_S` instead of resetting requests already on the wire.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from carbon_optimizer.settings import ConfigurationError, load_settings

try:
    _settings = load_settings()
except ConfigurationError as _exc:
    # gunicorn prints a traceback for an exception in its config file; SystemExit is one line.
    sys.exit(f"carbon-optimizer: {_exc}")
_server = _settings.server

# Multiprocess metrics must be configured before any worker imports prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tempfile.gettempdir()) / "carbon-optimizer-metrics")

wsgi_app = "carbon_optimizer.app:create_app()"
worker_class = "carbon_optimizer.worker.EdgeUvicornWorker"
bind = [os.environ.get("GUNICORN_BIND", f"{_server.host}:{_server.port}")]
if _settings.edge.metrics_port is not None:
    bind.append(f"{os.environ.get('GUNICORN_METRICS_HOST', _server.host)}:{_settings.edge.metrics_port}")
worker_connections = _settings.edge.max_connections  # informative: EdgeUvicornWorker enforces it
workers = _server.workers
threads = _server.threads  # only used by threaded worker classes; Uvicorn workers are async
timeout = _server.timeout_s
graceful_timeout = _server.graceful_timeout_s
keepalive = _server.keepalive_s
max_requests = _server.max_requests
max_requests_jitter = _server.max_requests_jitter
loglevel = _server.log_level
# Heartbeat files on tmpfs: works with a read-only root FS and avoids disk stalls.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None  # noqa: S108
forwarded_allow_ips = ""
proxy_allow_ips = ""
accesslog = None
# gunicorn >= 24 opens a control socket under $HOME by default; the container's home does not
# exist, the root FS is read-only, and two instances on one host would share the path.
control_socket_disable = True
capture_output = False
proc_name = "carbon-optimizer"

_formatter = (
    {"()": "carbon_optimizer.logging_config.JsonFormatter"}
    if _server.json_logs
    else {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"}
)
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": _formatter},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stdout"}
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": _server.log_level.upper(), "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["stdout"], "level": _server.log_level.upper()},
}


def on_starting(server: Any) -> None:
    """Wipe the Prometheus multiprocess directory before any worker writes to it."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    server.log.info("prometheus multiprocess dir ready: %s", directory)


def post_fork(server: Any, worker: Any) -> None:
    """Route the worker's logs (root, uvicorn, ours) through the JSON formatter with secret masking."""
    from carbon_optimizer.logging_config import configure_logging

    configure_logging(_settings)


def child_exit(server: Any, worker: Any) -> None:
    """Fold a dead worker's metric files into the archive and delete them (bounded directory)."""
    from carbon_optimizer.metrics_files import retire_worker_metrics

    removed = retire_worker_metrics(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    server.log.info("retired %d metric file(s) of worker %s", removed, worker.pid)


def worker_abort(worker: Any) -> None:
    """Log a worker killed for missing its heartbeat (a request ran past `timeout`)."""
    worker.log.warning("worker %s aborted after exceeding the %s s timeout", worker.pid, timeout)
