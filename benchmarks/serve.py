"""Load test of ``python -m dllm2rec serve`` on 127.0.0.1: requests/s and p50/p99 latency.

    python benchmarks/serve.py --model results/students/.../model.pt [--data results/data/D]
                               [--clients 1 100] [--requests 2000] [--seconds 60] [--k 10] [--threads 1]

The student is served in this process (:func:`dllm2rec.serve.make_server` on a free loopback
port, a thread per connection); each client is a thread with its own keep-alive connection
(``http.client``) that POSTs one history per request, drawn in turn from the dataset's test
histories, until ``--requests`` requests are done or ``--seconds`` have passed (both bounds
hold for each ``--clients`` level). Latency is the wall time of one request seen by its client
(connection reused, so without the TCP handshake); requests/s is completed requests over the
level's wall time. Every answer is checked (status 200, k items); failures are counted.
Prints one JSON object: the machine, the model and, per client count, requests, seconds,
requests_per_second, p50_ms, p99_ms and failures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def load_level(port: int, histories: list[list[int]], clients: int, requests: int, seconds: float, k: int,
               expect: int | None = None) -> dict:
    """``clients`` threads POST /recommend until ``requests`` are done or ``seconds`` have passed;
    an answer counts as failed unless it is a 200 with ``expect`` (default ``k``) items."""
    expect = k if expect is None else expect
    latencies: list[float] = []
    failures = [0]
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.perf_counter() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    if issued[0] >= requests or time.perf_counter() > deadline:
                        return
                    n = issued[0]
                    issued[0] += 1
                body = json.dumps({"history": histories[n % len(histories)], "k": k})
                start = time.perf_counter()
                try:
                    conn.request("POST", "/recommend", body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    answer = json.loads(resp.read())
                    ok = resp.status == 200 and len(answer["items"]) == expect
                except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
                    ok = False
                    with lock:
                        errors.append(f"{err.__class__.__name__}: {err}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    failures[0] += not ok
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done = len(latencies)
    return {"clients": clients, "requests": done, "seconds": round(wall, 3),
            "requests_per_second": round(done / wall, 1) if wall else float("nan"),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 3), "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 3) if latencies else float("nan"), "failures": failures[0],
            "errors": sorted(set(errors))[:5]}


def run(model, data=None, clients=(1, 100), requests: int = 2000, seconds: float = 60.0, k: int = 10,
        threads: int = 1) -> dict:
    """Serve ``model`` on a free loopback port and load it at each client count; the figures."""
    import torch

    from dllm2rec.recommend import Recommender
    from dllm2rec.serve import make_server
    from dllm2rec.student.train import load_sequences

    torch.set_num_threads(threads)
    rec = Recommender.load(model, data)
    _, _, splits = load_sequences(rec.data)
    te = splits["test"]
    histories = [row[:n].tolist() for row, n in zip(te.history, te.lengths)]
    server = make_server(rec, "127.0.0.1", 0, quiet=True)
    port = server.server_address[1]
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        expect = min(k, rec.n_items)
        load_level(port, histories, 1, min(20, requests), seconds, k, expect)  # warm-up, not recorded
        levels = [load_level(port, histories, c, requests, seconds, k, expect) for c in clients]
    finally:
        server.shutdown()
        server.server_close()
    return {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version(), "torch": torch.__version__, "threads": threads},
            "model": {k: rec.meta.get(k) for k in ("backbone", "method", "n_items", "max_len")},
            "k": k, "histories": len(histories), "levels": levels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a student's model.pt")
    ap.add_argument("--data", help="its dataset folder (default: found from the model's results/ path)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 100], help="concurrent clients per level (default: 1 100)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per level at most (default: 2000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per level at most (default: 60)")
    ap.add_argument("--k", type=int, default=10, help="items per answer (default: 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server (default: 1)")
    args = ap.parse_args()
    print(json.dumps(run(args.model, args.data, args.clients, args.requests, args.seconds, args.k, args.threads), indent=1))


if __name__ == "__main__":
    main()
