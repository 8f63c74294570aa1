#!/usr/bin/python3
"""N concurrent Server-Sent Events clients following one lsqd job from its
first event to its "end" event. Each checks that it received every event id
1, 2, ... up to the end's last_seq, in order, with no gap or repeat.
Prints one summary line; exits 1 when any client missed, repeated or
reordered an event, or never saw the end.
  sse_clients.py PORT JOB N READY_FILE TIMEOUT_S"""
import asyncio
import json
import sys
import time

PORT, JOB, N, READY, TIMEOUT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
connected = 0


async def client():
    global connected
    r, w = await asyncio.open_connection("127.0.0.1", PORT, limit=1 << 20)
    w.write(f"GET /api/v1/jobs/{JOB}/events HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    status = await r.readline()
    if b" 200 " not in status:
        return ("status", status.decode(errors="replace").strip())
    while (await r.readline()) not in (b"\r\n", b"\n", b""):
        pass
    connected += 1
    if connected == N:
        open(READY, "w").write(f"{N}\n")
    ids, etype = [], None
    # HTTP/1.0: the stream is the body as is, no chunk framing
    while True:
        line = await r.readline()
        if not line:
            return ("eof", ids)
        s = line.rstrip(b"\r\n")
        if s.startswith(b"id: "):
            ids.append(int(s[4:]))
        elif s.startswith(b"event: end"):
            etype = "end"
        elif s.startswith(b"data: ") and etype == "end":
            last = json.loads(s[6:])["last_seq"]
            w.close()
            ok = ids == list(range(1, last + 1))
            return ("ok" if ok else "gap", (len(ids), last))


async def main():
    t0 = time.time()
    res = await asyncio.wait_for(asyncio.gather(*(client() for _ in range(N)),
                                                return_exceptions=True), TIMEOUT)
    kinds = {}
    for x in res:
        k = x[0] if isinstance(x, tuple) else type(x).__name__
        kinds[k] = kinds.get(k, 0) + 1
    events = [x[1][0] for x in res if isinstance(x, tuple) and x[0] == "ok"]
    print(f"sse: {N} clients, {kinds.get('ok', 0)} saw every event in order "
          f"({min(events) if events else 0}..{max(events) if events else 0} events each), "
          f"outcomes {kinds}, {time.time() - t0:.1f} s")
    sys.exit(0 if kinds.get("ok", 0) == N else 1)


asyncio.run(main())
