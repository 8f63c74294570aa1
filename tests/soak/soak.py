#!/usr/bin/python3
"""Soak test of lsqd (docs/reliability.md, "Soak").

Starts the real lsqd on loopback with a temporary data folder and pushes
--jobs tiny jobs through it while, from a seeded random generator, it
cancels jobs, SIGKILLs workers (the lsq children of lsqd) and SIGKILLs lsqd
itself --lsqd-kills times, restarting it on the same data folder each time.
Then it checks:

  - every job reached a terminal state (succeeded, failed, cancelled), and
    the state fits what was done to it: a job nobody touched succeeded (or,
    when it was running at an lsqd kill, may have run out of --max-attempts);
    a job whose cancel was accepted is cancelled (or had already succeeded);
  - each job's events, read back through GET /api/v1/jobs/{id}/events, are
    numbered 1..N without a gap or a repeat, N being the end event's last_seq;
  - no lsq worker outlives an lsqd SIGKILL, and none is left at the end;
  - lsqd's open descriptors (/proc/PID/fd) and RSS (VmRSS) on its last run,
    idle after a warm-up and idle again at the end: descriptors not grown,
    RSS within --rss-tolerance.

Standard library only. Exits 1 on any violation, 2 on a usage or start-up
error. Usage:
  tests/soak/soak.py --lsqd build/lsqd --lsq build/lsq [--jobs 300]
                     [--lsqd-kills 3] [--seed 1] [--workers 2]
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TERMINAL = ("succeeded", "failed", "cancelled")
# A job of about a second on one core.
SPEC = {"model": {"arch": "mlp"},
        "dataset": {"train_limit": 256, "test_limit": 64},
        "pretrain": {"epochs": 1}, "train": {"epochs": 1},
        "quant": {"weight_bits": 4, "calibration_images": 64}, "threads": 1}


def log(msg):
    print("soak: " + msg, flush=True)


class Lsqd:
    """One lsqd on a fixed data folder; restartable after a kill."""

    def __init__(self, binary, lsq, root, workers, max_attempts):
        self.binary, self.lsq, self.root = binary, lsq, root
        self.data = os.path.join(root, "data")
        self.log = os.path.join(root, "lsqd.log")
        self.workers, self.max_attempts = workers, max_attempts
        self.proc, self.base = None, None

    def start(self):
        offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--listen", "127.0.0.1:0", "--data", self.data, "--lsq", self.lsq,
             "--workers", str(self.workers), "--max-attempts", str(self.max_attempts),
             "--grace", "5"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("lsqd exited at start-up, see " + self.log)
            with open(self.log, "rb") as f:
                f.seek(offset)
                for line in f:
                    if b'"msg":"listening"' in line:
                        port = json.loads(line)["port"]
                        self.base = "http://127.0.0.1:%d" % port
                        return
            time.sleep(0.02)
        raise RuntimeError("lsqd did not log a listening port, see " + self.log)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def request(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError("GET %s: %d %s" % (path, status, body[:200]))
        return json.loads(body)

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1


def workers_of(data):
    """Pids of lsq processes whose command line names our data folder."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % name) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or len(argv) < 3 or os.path.basename(argv[0]) != b"lsq":
            continue
        if argv[1] == b"train" and argv[2].startswith(data.encode() + b"/"):
            out.append(int(name))
    return sorted(out)


def read_events(d, job_id):
    """The ids and the end event of a finished job's SSE stream."""
    status, body = d.request("GET", "/api/v1/jobs/%d/events" % job_id, timeout=60)
    if status != 200:
        raise RuntimeError("events of job %d: %d" % (job_id, status))
    ids, end, ev_type, ev_id = [], None, None, None
    for line in body.decode().split("\n"):
        if line.startswith("id: "):
            ev_id = int(line[4:])
        elif line.startswith("event: "):
            ev_type = line[7:]
        elif line.startswith("data: ") and ev_type == "end":
            end = json.loads(line[6:])
        elif line == "":
            if ev_id is not None:
                ids.append(ev_id)
            ev_type, ev_id = None, None
    return ids, end


def live(d):
    """The queued and running jobs."""
    return [j for s in ("running", "queued")
            for j in d.get_json("/api/v1/jobs?state=%s&limit=1000" % s)["jobs"]]


def wait_idle(d, timeout):
    """Waits until no job is queued or running; returns False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not live(d) and not workers_of(d.data):
            return True
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lsqd", required=True)
    ap.add_argument("--lsq", required=True)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--lsqd-kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-attempts", type=int, default=3)
    ap.add_argument("--cancel-p", type=float, default=0.10,
                    help="chance per submitted job that a random live job is cancelled")
    ap.add_argument("--worker-kill-p", type=float, default=0.10,
                    help="chance per submitted job that a random worker is SIGKILLed")
    ap.add_argument("--warmup", type=int, default=10, help="jobs before the first measure")
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ap.add_argument("--timeout", type=float, default=3600, help="whole run, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    if a.jobs < a.warmup + 10 or a.lsqd_kills < 0:
        ap.error("--jobs must be at least --warmup + 10")

    rnd = random.Random(a.seed)
    root = tempfile.mkdtemp(prefix="lsqd-soak-")
    d = Lsqd(os.path.abspath(a.lsqd), os.path.abspath(a.lsq), root, a.workers, a.max_attempts)
    t0 = time.monotonic()
    problems = []
    try:
        d.start()
    except RuntimeError as e:
        log(str(e))
        return 2
    log("lsqd pid %d, data %s, seed %d" % (d.proc.pid, d.data, a.seed))
    try:
        return soak(a, rnd, d, root, t0, problems)
    finally:
        if d.proc.poll() is None:  # an exception: lsqd must not outlive the script
            d.kill()
            for pid in workers_of(d.data):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def soak(a, rnd, d, root, t0, problems):
    """The run and its checks; returns the exit status."""
    # id -> what was done to the job: cancelled (accepted), worker_killed,
    # crashes (lsqd kills while it ran), cancel_then_crash (its attempts
    # when its cancel was followed by an lsqd kill, else None)
    jobs = {}
    # The lsqd kills fall in the first 60% of the submissions, so that the
    # last lsqd runs a long stretch alone: its descriptors and RSS are
    # measured after a warm-up there and again at the end.
    kill_at = sorted(rnd.sample(range(a.jobs // 10, a.jobs * 6 // 10), a.lsqd_kills))
    measure_at = (kill_at[-1] if kill_at else 0) + a.warmup
    before = None
    stats = {"cancels_sent": 0, "cancels_accepted": 0, "worker_kills": 0, "lsqd_kills": 0,
             "cancel_then_crash": 0}
    max_live = 2 * a.workers + 2

    def lsqd_crash():
        # Cancel one running job and SIGKILL lsqd straight after: the cancel
        # was accepted (202), so the job must end cancelled after the restart.
        running = [j for j in live(d) if j["state"] == "running"]
        pick = rnd.choice(running) if running else None
        victim = pick and pick["id"]
        if victim is not None:
            status, _ = d.request("POST", "/api/v1/jobs/%d/cancel" % victim)
            if status == 202:
                jobs[victim]["cancelled"] = True
                jobs[victim]["cancel_then_crash"] = pick["attempts"]
                stats["cancel_then_crash"] += 1
        for j in running:
            jobs[j["id"]]["crashes"] += 1
        d.kill()
        stats["lsqd_kills"] += 1
        # PR_SET_PDEATHSIG: no worker may outlive its lsqd
        deadline = time.monotonic() + 10
        while workers_of(d.data) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = workers_of(d.data)
        if orphans:
            problems.append("workers %s outlived the SIGKILLed lsqd" % orphans)
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
        d.start()
        log("lsqd SIGKILLed with %d running job(s) (cancel sent to %s), restarted as pid %d"
            % (len(running), victim, d.proc.pid))

    submitted = 0
    while submitted < a.jobs:
        if time.monotonic() - t0 > a.timeout:
            problems.append("timed out after %d submissions" % submitted)
            break
        now_live = live(d)
        if len(now_live) >= max_live:
            time.sleep(0.05)
            continue
        status, body = d.request("POST", "/api/v1/jobs", SPEC)
        if status != 201:
            problems.append("submit: HTTP %d %s" % (status, body[:200]))
            break
        jid = json.loads(body)["id"]
        jobs[jid] = {"cancelled": False, "worker_killed": False, "crashes": 0,
                     "cancel_then_crash": None}
        submitted += 1
        now_live.append({"id": jid, "state": "queued"})
        if rnd.random() < a.cancel_p:
            victim = rnd.choice(now_live)["id"]
            stats["cancels_sent"] += 1
            status, _ = d.request("POST", "/api/v1/jobs/%d/cancel" % victim)
            if status in (200, 202):
                jobs[victim]["cancelled"] = True
                stats["cancels_accepted"] += 1
            elif status != 409:
                problems.append("cancel of job %d: HTTP %d" % (victim, status))
        if rnd.random() < a.worker_kill_p:
            # Let a worker get going first (a random point in its run).
            time.sleep(rnd.uniform(0.0, 1.0))
            pids = workers_of(d.data)
            if pids:
                pid = rnd.choice(pids)
                try:  # the worker may have ended since it was listed
                    with open("/proc/%d/cmdline" % pid, "rb") as f:
                        argv = f.read().split(b"\0")
                    victim = int(os.path.basename(os.path.dirname(argv[2])))
                    os.kill(pid, signal.SIGKILL)
                    jobs[victim]["worker_killed"] = True
                    stats["worker_kills"] += 1
                except (OSError, IndexError, ValueError):
                    pass
        if kill_at and submitted == kill_at[0]:
            kill_at.pop(0)
            # wait (up to 20 s) for a running job, so that the kill hits one
            deadline = time.monotonic() + 20
            while (time.monotonic() < deadline
                   and not any(j["state"] == "running" for j in live(d))):
                time.sleep(0.05)
            time.sleep(rnd.uniform(0.0, 0.8))
            lsqd_crash()
        if submitted == measure_at:
            if not wait_idle(d, 300):
                problems.append("lsqd did not become idle after the warm-up")
            time.sleep(1)
            before = (d.proc.pid, d.fds(), d.rss_kb())
            log("measured after warm-up: pid %d, %d fds, RSS %d KiB" % before)

    if not wait_idle(d, max(60.0, a.timeout - (time.monotonic() - t0))):
        problems.append("jobs still queued or running at the end")
    time.sleep(1)
    after = (d.proc.pid, d.fds(), d.rss_kb())
    log("measured at the end:    pid %d, %d fds, RSS %d KiB" % after)

    # ---- checks
    counts = {s: 0 for s in TERMINAL}
    codes = {}
    events = 0
    for jid, what in sorted(jobs.items()):
        j = d.get_json("/api/v1/jobs/%d" % jid)
        state = j["state"]
        if state not in TERMINAL:
            problems.append("job %d is %s" % (jid, state))
            continue
        counts[state] += 1
        code = (j.get("error") or {}).get("code")
        if state == "failed":
            codes[code] = codes.get(code, 0) + 1
        ok = {"succeeded"}
        if what["cancelled"]:
            ok.add("cancelled")
        if what["worker_killed"] and not what["cancelled"]:
            ok.add("failed")
        if state not in ok and not (state == "failed" and code == "too_many_attempts"
                                    and what["crashes"] >= a.max_attempts):
            problems.append("job %d ended %s (%s) after %s" % (jid, state, code, what))
        if what["cancel_then_crash"] is not None and j["attempts"] != what["cancel_then_crash"]:
            problems.append("job %d ran again after its cancel was accepted: attempts %d -> %d"
                            % (jid, what["cancel_then_crash"], j["attempts"]))
        if state == "failed" and what["worker_killed"] and code not in ("worker_killed",
                                                                          "too_many_attempts"):
            problems.append("job %d: worker SIGKILLed, but error code %s" % (jid, code))
        ids, end = read_events(d, jid)
        events += len(ids)
        if ids != list(range(1, len(ids) + 1)):
            gaps = [(p, n) for p, n in zip([0] + ids, ids) if n != p + 1]
            problems.append("job %d: event ids not 1..N, breaks at %s" % (jid, gaps[:5]))
        if end is None:
            problems.append("job %d: no end event" % jid)
        elif end.get("last_seq") != len(ids) or end.get("state") != state:
            problems.append("job %d: end event %s, but %d events and state %s"
                            % (jid, end, len(ids), state))
        if j.get("last_seq") != len(ids):
            problems.append("job %d: last_seq %s, %d events" % (jid, j.get("last_seq"), len(ids)))

    if before is None:
        problems.append("no measure after the warm-up")
    else:
        if before[0] != after[0]:
            problems.append("lsqd restarted between the measures")
        if after[1] > before[1]:
            problems.append("lsqd's descriptors grew: %d -> %d" % (before[1], after[1]))
        if abs(after[2] - before[2]) > a.rss_tolerance * before[2]:
            problems.append("lsqd's RSS moved more than %.0f%%: %d -> %d KiB"
                            % (100 * a.rss_tolerance, before[2], after[2]))

    rc = d.stop()
    if rc != 0:
        problems.append("lsqd exited %s on SIGTERM" % rc)
    left = workers_of(d.data)
    if left:
        problems.append("lsq processes left after lsqd stopped: %s" % left)
        for pid in left:
            os.kill(pid, signal.SIGKILL)

    elapsed = time.monotonic() - t0
    print(json.dumps({
        "seed": a.seed, "jobs": len(jobs), "workers": a.workers, "states": counts,
        "failed_codes": codes, "events_checked": events, **stats,
        "fds": {"before": before and before[1], "after": after[1]},
        "rss_kib": {"before": before and before[2], "after": after[2]},
        "runtime_s": round(elapsed, 1), "problems": len(problems)}, indent=None))
    for p in problems:
        log("VIOLATION: " + p)
    if problems:
        log("FAILED, lsqd's log and data kept in " + root)
    else:
        log("ok")
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
