#!/usr/bin/python3
"""Opens N idle connections to an lsqd on PORT (start it with a long
--header-timeout so they stay), then times five GET /api/v1/jobs beside them.
  idle_conns.py PORT N"""
import socket, subprocess, time, sys
port = int(sys.argv[1]); n = int(sys.argv[2])
ss = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
time.sleep(2)
m = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
print([l for l in m.splitlines() if l.startswith("lsqd_connections_open")])
worst = 0
for _ in range(5):
    t = time.time(); code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/api/v1/jobs"], capture_output=True, text=True).stdout
    worst = max(worst, time.time() - t); print(code, end=" ")
print(f"\nworst of 5 GET /api/v1/jobs beside {n} idle connections: {worst*1000:.1f} ms")
