"""Sentences per second through Ray Data (attend.ray.embed_parquet, 2 actors × 1 thread) against
one `attend embed` process with 2 threads, on the same generated corpus, in one run; the peak
memory of each Ray actor and of the driver, at two corpus sizes (bounded memory shows as the
same peak for both).

    python bench/ray_embed.py [--sizes 20000,60000] [--attend target/release/attend] [--check]

With --check, every output row is also compared with attend.load("minilm").embed of its text,
bit for bit, in input order with its id (what python/tests/test_ray.py checks on 5 000 rows):
`--sizes 100000 --check` is the 100 000-row instance the test suite once ran.

Needs `pip install . "ray[data]"`. The Ray cluster is started before the clock starts (an
existing cluster's cost); the actors' start-up (Python, model load) is inside the Ray figure,
as the model load is inside `attend embed`'s.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import ray

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python", "tests"))
from test_ray import check_output, corpus, map_workers, write_corpus  # noqa: E402

import attend.ray as ar  # noqa: E402


def hwm_mib(pid):
    """Peak resident memory of a process so far (VmHWM), MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def ray_run(src, dst, n):
    peaks = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for pid in map_workers():
                m = hwm_mib(pid)
                if m is not None:
                    peaks[pid] = max(peaks.get(pid, 0.0), m)
            time.sleep(0.2)

    w = threading.Thread(target=watch)
    w.start()
    t0 = time.perf_counter()
    r = ar.embed_parquet(src, dst, concurrency=2, threads=1)
    seconds = time.perf_counter() - t0
    done.set()
    w.join()
    assert r["rows"] == n and r["errors"] == 0, r
    return seconds, sorted(peaks.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20000,60000")
    ap.add_argument("--check", action="store_true", help="compare every row with embed, bit for bit")
    ap.add_argument("--attend", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "attend"))
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    work = tempfile.mkdtemp(prefix="attend-ray-bench-")
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            texts = corpus(n, seed=7)
            src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
            write_corpus(src, texts, files=max(2, n // 5000))
            shutil.rmtree(dst, ignore_errors=True)
            ray_s, actor_peaks = ray_run(src, dst, n)
            if args.check:
                import attend

                check_output(dst, texts, attend.load("minilm"))
                print(f"{n} rows: every one equal to embed, bit for bit, in order", file=sys.stderr)
            # the same corpus through one attend process, 2 threads
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            subprocess.run([args.attend, "embed", "--threads", "2", "--format", "json", "-"],
                           input="\n".join(texts).encode(), stdout=subprocess.DEVNULL, check=True)
            cli_s = time.perf_counter() - t0
            cli_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            row = {
                "sentences": n,
                "ray_per_s": round(n / ray_s, 1),
                "attend_embed_per_s": round(n / cli_s, 1),
                "ray_overhead": round(ray_s / cli_s - 1, 3),
                "actor_peak_mib": [round(p, 1) for p in actor_peaks],
                "driver_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "attend_embed_peak_mib": round(max(before, cli_peak) / 1024, 1),
            }
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
