"""A minimal AWS Lambda Runtime API for one already-built function binary, long-running.

    python3 scripts/runtime_api.py --binary target/debug/api --env-file ENV --log api.log \
        [--port P | --port 0 --port-file F] [--deadline-seconds 900] [--function-name api]
    python3 scripts/runtime_api.py --function-name analyze --clean-env --env-file ENV ... \
        -- COMMAND [ARG...]

It listens on 127.0.0.1, starts the binary (or COMMAND, e.g. a launcher that runs a container
image's entrypoint) with the environment of this process (none of it with --clean-env, as on
Lambda), the KEY=VALUE lines of --env-file, AWS_LAMBDA_RUNTIME_API pointing here and the usual
AWS_LAMBDA_FUNCTION_* variables, and serves the part of the Runtime API that the Rust
`lambda_runtime`/`lambda_http` crates (v1) use:

    GET  /2018-06-01/runtime/invocation/next             blocks until an event is queued
    POST /2018-06-01/runtime/invocation/{id}/response    the function's answer
    POST /2018-06-01/runtime/invocation/{id}/error       the function's error (a JSON diagnostic)
    POST /2018-06-01/runtime/init/error                  the runtime could not start

and, for tests, like the Lambda Invoke API:

    POST /invoke    the body is the event; blocks until the function answers: 200 with its response
                    body, or 502 with its error JSON (also when it failed to start, exited, or ran
                    past its deadline; it is then killed, as Lambda would)
    GET  /status    JSON: the function's pid, its exit status (null while it runs), queued events,
                    init_ms (its start to its first /next), each finished invocation's seconds
                    (from /next handing it out to the function's answer), and peak_rss_mb: the
                    sum of the peak RSS (VmHWM) of each process of the function's group (it and
                    its ffmpeg; read every 20 ms, so an upper bound of their peak together)

Events are handed out one at a time, in order. The function's stdout and stderr, and a line per
invocation from this server ("[runtime_api] ..."), go to --log. SIGTERM (or SIGINT) kills the
function (its whole process group, ffmpeg included) and exits. python3 stdlib only.
"""
import argparse, collections, ctypes, http.server, json, os, signal, subprocess, sys, threading, time, uuid

PREFIX = "/2018-06-01/runtime/"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", help="the function binary, e.g. target/debug/api (or give a COMMAND)")
    p.add_argument("--clean-env", action="store_true",
                   help="the function sees only --env-file and the Lambda variables, not this process's environment")
    p.add_argument("--env-file", help="KEY=VALUE lines for the function (blank lines and # comments skipped)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port, see --port-file)")
    p.add_argument("--port-file", help="written with the port once the server listens")
    p.add_argument("--log", required=True, help="the function's stdout and stderr, and this server's notes")
    p.add_argument("--deadline-seconds", type=float, default=900.0,
                   help="Lambda-Runtime-Deadline-Ms is the time of /next plus this (default 900, Lambda's maximum)")
    p.add_argument("--function-name", help="AWS_LAMBDA_FUNCTION_NAME (default: the binary's file name)")
    p.add_argument("--memory-size", type=int, default=3008, help="AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...] to start instead of --binary")
    args = p.parse_args()
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if bool(args.binary) == bool(args.command):
        p.error("give either --binary or -- COMMAND")
    return args


def read_env_file(path):
    env = {}
    if path:
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if line and not line.startswith("#"):
                key, sep, value = line.partition("=")
                if not sep:
                    sys.exit(f"runtime_api: {path}: not KEY=VALUE: {line!r}")
                env[key.strip()] = value
    return env


class Invocation:
    def __init__(self, event):
        self.id = str(uuid.uuid4())
        self.event = event
        self.deadline = None  # seconds since the epoch, set when the function takes it
        self.taken = None  # time.monotonic() when the function took it
        self.result = None  # (HTTP status for /invoke, body bytes)


class State:
    def __init__(self, args, log):
        self.args, self.log = args, log
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.inflight = {}
        self.exit_status = None  # the function's, once it has exited
        self.init_error = None
        self.child = None
        self.started = None  # time.monotonic() of the function's start
        self.init_ms = None  # its start to its first /next
        self.durations = []  # seconds of each finished invocation, in order
        self.peak_rss_kb = {}  # pid -> its peak resident memory (KiB), for each process seen

    def note(self, message):
        self.log.write(f"[runtime_api] {time.strftime('%H:%M:%S')} {message}\n".encode())
        self.log.flush()

    def failure(self):
        """Why no invocation can succeed any more, or None."""
        if self.init_error is not None:
            return self.init_error
        if self.exit_status is not None:
            how = f"signal {-self.exit_status}" if self.exit_status < 0 else f"status {self.exit_status}"
            return {"errorType": "Runtime.ExitError", "errorMessage": f"the function exited with {how}"}
        return None

    def finish(self, inv, status, body):
        """Records an invocation's outcome (the caller holds the lock)."""
        if inv.result is None:
            inv.result = (status, body)
            if inv.taken is not None:
                self.durations.append(round(time.monotonic() - inv.taken, 3))
        self.inflight.pop(inv.id, None)
        self.cond.notify_all()


def error_body(error):
    return json.dumps(error).encode()


def make_handler(state):
    args = state.args
    name = args.function_name
    arn = f"arn:aws:lambda:{state.region}:123456789012:function:{name}"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the runtime's pooled hyper client expects

        def log_message(self, *a):
            pass

        def reply(self, status, body=b"", headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_GET(self):
            if self.path == PREFIX + "invocation/next":
                with state.cond:
                    if state.init_ms is None:
                        state.init_ms = round(1000 * (time.monotonic() - state.started), 1)
                    while not state.queue:
                        state.cond.wait()
                    inv = state.queue.popleft()
                    inv.taken = time.monotonic()
                    inv.deadline = time.time() + args.deadline_seconds
                    state.inflight[inv.id] = inv
                state.note(f"{inv.id}: handed to the function ({len(inv.event)} bytes)")
                trace = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
                self.reply(200, inv.event, [
                    ("Lambda-Runtime-Aws-Request-Id", inv.id),
                    ("Lambda-Runtime-Deadline-Ms", str(int(inv.deadline * 1000))),
                    ("Lambda-Runtime-Invoked-Function-Arn", arn),
                    ("Lambda-Runtime-Trace-Id", trace),
                ])
            elif self.path == "/status":
                with state.cond:
                    status = {"pid": state.child.pid if state.child else None, "exit_status": state.exit_status,
                              "init_error": state.init_error, "queued": len(state.queue), "inflight": len(state.inflight),
                              "init_ms": state.init_ms, "invocations": state.durations,
                              "peak_rss_mb": round(sum(state.peak_rss_kb.values()) / 1024, 1)}
                self.reply(200, json.dumps(status).encode())
            else:
                self.reply(404, error_body({"errorType": "NotFound", "errorMessage": self.path}))

        def do_POST(self):
            body = self.body()
            parts = self.path[len(PREFIX):].split("/") if self.path.startswith(PREFIX) else []
            if self.path == "/invoke":
                self.invoke(body)
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                with state.cond:
                    inv = state.inflight.get(parts[1])
                    if inv is not None:
                        if parts[2] == "response":
                            state.finish(inv, 200, body)
                        else:
                            state.finish(inv, 502, body)
                if inv is None:
                    state.note(f"{parts[1]}: {parts[2]} for an unknown or finished invocation")
                    self.reply(400, error_body({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}))
                    return
                state.note(f"{inv.id}: {parts[2]} ({len(body)} bytes)")
                self.reply(202, b'{"status":"OK"}')
            elif parts == ["init", "error"]:
                try:
                    error = json.loads(body)
                except ValueError:
                    error = {"errorMessage": body.decode(errors="replace")}
                error.setdefault("errorType", self.headers.get("Lambda-Runtime-Function-Error-Type", "Runtime.InitError"))
                with state.cond:
                    state.init_error = error
                    state.cond.notify_all()
                state.note(f"init error: {json.dumps(error)}")
                self.reply(202, b'{"status":"OK"}')
            else:
                self.reply(404, error_body({"errorType": "NotFound", "errorMessage": self.path}))

        def invoke(self, event):
            inv = Invocation(event)
            timed_out = False
            with state.cond:
                failure = state.failure()
                if failure is None:
                    state.queue.append(inv)
                    state.cond.notify_all()
                    while inv.result is None:
                        failure = state.failure()
                        if failure is not None:
                            if inv in state.queue:
                                state.queue.remove(inv)
                            state.finish(inv, 502, error_body(failure))
                        elif inv.deadline is not None and time.time() > inv.deadline:
                            timed_out = True
                            state.finish(inv, 502, error_body({
                                "errorType": "Sandbox.Timedout",
                                "errorMessage": f"Task timed out after {args.deadline_seconds:.0f} seconds"}))
                        else:
                            state.cond.wait(1.0)
                else:
                    inv.result = (502, error_body(failure))
            if timed_out:
                state.note(f"{inv.id}: past its deadline, killing the function")
                kill(state.child)
            status, body = inv.result
            if status != 200:
                state.note(f"{inv.id}: /invoke answers {status}: {body[:500].decode(errors='replace')}")
            self.reply(status, body, [("X-Amz-Function-Error", "Unhandled")] if status != 200 else [])

    return Handler


def kill(child, grace=5.0):
    """SIGTERM to the function's process group, SIGKILL after `grace` seconds."""
    if child is None:
        return
    if child.poll() is not None:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # what it left running (an ffmpeg), if anything
        except (ProcessLookupError, PermissionError):
            pass
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


def record_peaks(pgid, peaks):
    """Updates `peaks` (pid -> KiB) with the peak resident memory (VmHWM) of each process in
    process group `pgid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the command: state, ppid, pgrp, ...
                continue
            with open(f"/proc/{entry}/status") as f:
                hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
            peaks[int(entry)] = max(peaks.get(int(entry), 0), hwm)
        except (OSError, ValueError, IndexError):
            pass  # it exited meanwhile


def die_with_parent():
    """In the child: SIGKILL when this server dies, even by SIGKILL (Linux; best effort)."""
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return lambda: None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main():
    args = parse_args()
    args.function_name = args.function_name or os.path.basename(args.binary or args.command[0])
    if args.binary:
        command = [os.path.abspath(args.binary)]
        if not os.access(command[0], os.X_OK):
            sys.exit(f"runtime_api: {args.binary} is not an executable")
    else:
        command = args.command
    function_env = read_env_file(args.env_file)
    log = open(args.log, "ab", buffering=0)
    state = State(args, log)
    state.region = function_env.get("AWS_REGION", os.environ.get("AWS_REGION", "us-east-1"))  # for the ARN

    # bound and listening now; its thread starts after the fork below, so that the child is
    # forked from a process with one thread (preexec_fn), and from the main thread, which lives as
    # long as this process (PR_SET_PDEATHSIG follows the thread that forked)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    server.daemon_threads = True
    port = server.server_address[1]

    env = dict({} if args.clean_env else os.environ, **function_env)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": args.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(args.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{args.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
    })

    def stop(signum, _frame):
        state.note(f"signal {signum}: stopping the function")
        kill(state.child)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # its own process group (ffmpeg and any other children with it), killed with this server
    state.started = time.monotonic()
    state.child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True, preexec_fn=die_with_parent())
    state.note(f"started {' '.join(command)} (pid {state.child.pid}) with AWS_LAMBDA_RUNTIME_API=127.0.0.1:{port}")
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def monitor():
        status = state.child.wait()
        with state.cond:
            state.exit_status = status
            state.cond.notify_all()
        state.note(f"the function exited with status {status}")

    threading.Thread(target=monitor, daemon=True).start()

    def sample_memory():
        while state.exit_status is None:
            record_peaks(state.child.pid, state.peak_rss_kb)
            time.sleep(0.02)

    threading.Thread(target=sample_memory, daemon=True).start()
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"runtime_api: {args.function_name} on 127.0.0.1:{port}", flush=True)
    while True:  # the main thread only takes signals; /invoke reports an exit status until SIGTERM
        signal.pause()


if __name__ == "__main__":
    main()
