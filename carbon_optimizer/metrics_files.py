"""Prometheus multiprocess files of dead gunicorn workers: fold, then delete (issue 11 item 10).

Kept apart from `carbon_optimizer.metrics` on purpose: the gunicorn master calls this, and
importing the metric definitions there would make the master create metric files of its own.
"""

from __future__ import annotations

# Per-process file types whose values must outlive their process (totals), vs. gauges that
# describe a process's current state and die with it.
_CUMULATIVE_TYPES = ("counter", "histogram", "summary")


def retire_worker_metrics(pid: int, directory: str) -> int:
    """Fold a dead worker's Prometheus multiprocess files into one archive per type; delete them.

    `prometheus_client.multiprocess.mark_process_dead` only removes `live*` gauge files, so every
    recycled worker used to leave ~25 KB of counter/histogram/gauge files behind (a 64 MiB tmpfs
    full in about a day at full load). Counters, histograms and summaries are added into
    `<type>_archive.db` (totals stay monotonic across recycling, no counter reset is seen by
    Prometheus); the dead worker's gauges are dropped (they described a process that is gone).
    Runs in the gunicorn master (`child_exit`), the archive's only writer. Returns files removed.
    """
    import glob
    import os

    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    removed = 0
    for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
        kind = os.path.basename(path).split("_", 1)[0]
        if kind in _CUMULATIVE_TYPES:
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
            try:
                for key, value, timestamp, _pos in MmapedDict.read_all_values_from_file(path):  # type: ignore[no-untyped-call]
                    current, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
                    archive.write_value(key, current + value, timestamp)  # type: ignore[no-untyped-call]
            finally:
                archive.close()  # type: ignore[no-untyped-call]
        os.remove(path)
        removed += 1
    return removed
