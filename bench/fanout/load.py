"""Sends N requests over keep-alive connections (THREADS at once), each thread pausing PACE
seconds between requests (a paced load: the Python candidate must keep up with the fan-out's
calls, or the exchanges are skipped for the memory budget instead of measured), and prints the
wall time."""
import http.client
import sys
import threading
import time

host, port, method, path, body, n, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
pace = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0


def run(count):
    c = http.client.HTTPConnection(host, port)
    for _ in range(count):
        c.request(method, path, body=body.encode() if body else None,
                  headers={"content-type": "application/json"} if body else {})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        if pace:
            time.sleep(pace)


t0 = time.time()
ts = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(f"{time.time() - t0:.2f}")
