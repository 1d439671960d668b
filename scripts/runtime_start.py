"""A minimal Lambda Runtime API: starts a function binary, hands it one event and reports the time
from process start to its answer, and its peak RSS. It separates the function's own start from
the overhead of `cargo lambda watch`'s emulator (which measure-start also reports).

    python3 scripts/runtime_start.py target/release/api events/apigw-openapi.json
"""
import http.server, json, os, subprocess, sys, threading, time
event = open(sys.argv[2], "rb").read()
done = threading.Event()
stamps = {}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if "next" in self.path:
            if "next" in stamps:
                time.sleep(5); return
            stamps["next"] = time.perf_counter()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time()*1000)+30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:api")
            self.send_header("Content-Type", "application/json")
            self.end_headers(); self.wfile.write(event)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); body = self.rfile.read(n)
        stamps["response"] = time.perf_counter(); stamps["body"] = body[:80]
        self.send_response(202); self.end_headers(); done.set()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{srv.server_address[1]}", AWS_LAMBDA_FUNCTION_NAME="api",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1", TABLE_NAME="t", BUCKET_NAME="b", QUEUE_URL="q",
    AWS_REGION="eu-west-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", DEEPEMOTION_DEV="1",
    DEEPEMOTION_JWT_SECRET="measure-start-secret-0123456789abcdef", RUST_LOG="warn")
t0 = time.perf_counter()
p = subprocess.Popen([sys.argv[1]], env=env)
done.wait(10)
hwm = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmHWM")][0].split()[1]
assert stamps["body"].startswith(b'{"statusCode":200'), stamps["body"]
print(f"FIGURE {os.path.basename(sys.argv[1])} start, minimal Runtime API: process start to first answer {1000*(stamps['response']-t0):.1f} ms (first /next after {1000*(stamps['next']-t0):.1f} ms), peak RSS {int(hwm)/1024:.1f} MB")
p.kill()
