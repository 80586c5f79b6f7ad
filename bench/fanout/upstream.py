"""A fixed-page JSON upstream for bench/fanout/run.sh: every request (any method, any path) is
answered with the same ~24 KB page of 50 employees; request bodies are drained."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = json.dumps({
    "page": 1,
    "results": [
        {"id": f"emp-{i:04}", "first_name": f"First{i}", "last_name": f"Last{i}",
         "work_email": f"first{i}@acme.example", "title": "Engineer" * 4,
         "department": {"id": f"d{i % 7}", "name": "Engineering"},
         "location": {"city": "San Francisco", "country": "US", "line1": "1 Market St " * 3},
         "start_date": "2019-03-04", "salary": 150000 + i, "active": True,
         "tags": ["a", "b", "c"], "manager": {"id": f"emp-{max(i - 1, 0):04}"}}
        for i in range(50)
    ],
}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    do_GET = do_POST = answer


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    srv.serve_forever()
