"""A vendor answering one hostile page: one member name of NAME_LEN bytes above N members.

python3 up.py PORT VALUE NAME_LEN N  (the legacy side with VALUE 1, the candidate's with 2:
every member differs). With SHAPE=records, one name above a list of N records that differ in
two members each (ordinary paths, 2 x N differences). Loopback only.
"""
import http.server
import os
import socketserver
import sys

port, value, name_len, n = (int(a) for a in sys.argv[1:5])
if os.environ.get("SHAPE") == "records":
    # Ordinary paths, many differences: a list of N records differing in two members each.
    records = ",".join(f'{{"id":{i},"v":{value},"w":"{value}"}}' for i in range(n))
    body = ('{"' + "n" * name_len + '":[' + records + "]}").encode()
else:
    members = ",".join(f'"m{i}":{value}' for i in range(n))
    body = ('{"' + "n" * name_len + '":{' + members + "}}").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


Server(("127.0.0.1", port), Handler).serve_forever()
