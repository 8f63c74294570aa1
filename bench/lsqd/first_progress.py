#!/usr/bin/python3
"""Time from POST /api/v1/jobs to the first progress event on the job's SSE
stream, with a free worker. Usage: first_progress.py URL [RUNS]"""
import json
import sys
import time
import urllib.request

base = sys.argv[1].rstrip("/")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
spec = {"model": {"arch": "mlp"}, "dataset": {"train_limit": 2000, "test_limit": 500},
        "pretrain": {"epochs": 1}, "train": {"epochs": 1}, "quant": {"weight_bits": 4}}
times = []
for _ in range(runs):
    t0 = time.monotonic()
    req = urllib.request.Request(base + "/api/v1/jobs", data=json.dumps(spec).encode(),
                                 headers={"Content-Type": "application/json"})
    job = json.load(urllib.request.urlopen(req))
    first = None
    with urllib.request.urlopen(f"{base}/api/v1/jobs/{job['id']}/events") as sse:
        for raw in sse:
            line = raw.decode().rstrip("\n")
            if first is None and line == "event: progress":
                first = time.monotonic() - t0
            if line == "event: end":
                break
    times.append(first)
    print(f"job {job['id']}: first progress after {first * 1000:.0f} ms")
times.sort()
print(f"median {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms over {runs} jobs")
