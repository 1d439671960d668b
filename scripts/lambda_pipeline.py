"""The product's AWS path, driven through two Lambda Runtime APIs (scripts/runtime_api.py) and moto.

    python3 scripts/lambda_pipeline.py resources --endpoint URL
        creates a table, a bucket, a queue and a delivery queue as template.yaml declares them,
        with the bucket's ObjectCreated notifications sent to the queue; prints KEY=VALUE lines
        (TABLE_NAME, BUCKET_NAME, QUEUE_URL, DELIVERY_QUEUE_URL) for the functions' environment

    python3 scripts/lambda_pipeline.py analyse --endpoint URL --queue-url Q --api-port P \
        --analyze-port P --clip FILE [--expect-pexels] [--deliver-port P --delivery-queue-url Q]
        a user registers, logs in and initializes an upload through the API function, PUTs the clip
        to the presigned URL; S3 notifies the queue; each message is handed to the analysis function
        in an SQS event of one record, as the event source mapping (BatchSize 1) does, and deleted
        when the function reports no failure; then the video is read back through the API: it must
        be COMPLETED with a frame per sampled frame (and, with --expect-pexels, the Pexels clip's
        timeline: sad at 2 s, happy at 15 s). With --deliver-port, the user first registers a
        webhook endpoint (a receiver on 127.0.0.1; the functions run with DEEPEMOTION_DEV=1), and
        the analysis's announcement is taken from the delivery queue and handed to the deliver
        function: the receiver must get one `video.completed` delivery, signed with the endpoint's
        secret. Prints `ok ...` lines and, last, one JSON line with the video id and the analysis
        invocation's seconds; exits 1 with `FAIL ...` otherwise.

The API events are the fixtures in events/ (those `sam local invoke` takes). Needs boto3.
"""
import argparse, base64, hashlib, hmac, http.server, json, os, sys, threading, time, urllib.error, urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS = os.path.join(ROOT, "events")
REGION = os.environ.get("AWS_REGION", "us-east-1")


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"ok   {message}", flush=True)


def resources(endpoint):
    suffix = f"{time.time_ns()}"
    table = bucket = queue = f"pipeline-{suffix}"
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)
    attr = lambda n: {"AttributeName": n, "AttributeType": "S"}
    ddb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[attr("pk"), attr("sk"), attr("gsi1pk"), attr("gsi1sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "gsi1", "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"}, {"AttributeName": "gsi1sk", "KeyType": "RANGE"}],
        }],
    )
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    # as template.yaml's bucket: uploads/ ObjectCreated events to the analysis queue
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}},
    }]})
    # webhook deliveries: sent delayed by the analysis, API and deliver functions
    delivery_queue_url = sqs.create_queue(QueueName=f"{queue}-deliveries")["QueueUrl"]
    print(f"TABLE_NAME={table}\nBUCKET_NAME={bucket}\nQUEUE_URL={queue_url}\nDELIVERY_QUEUE_URL={delivery_queue_url}")


def invoke(port, event, what):
    """The function's response to `event` through its Runtime API's /invoke, as JSON."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invoke", data=json.dumps(event).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=1800) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        fail(f"{what}: the function failed: {e.code} {e.read()[:500]!r}")
    except OSError as e:
        fail(f"{what}: invoking it: {e}")


def fixture(name):
    with open(os.path.join(EVENTS, name), encoding="utf-8") as f:
        return json.load(f)


def api_call(port, name, what, token=None, path=None, query="", body=None):
    """An API Gateway event from the fixture `name` (with the token, another path and query, another
    JSON body) -> (status, body)."""
    event = fixture(name)
    if token:
        event["headers"]["authorization"] = f"Bearer {token}"
    if path:
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["rawQueryString"] = query
    if body is not None:
        event["body"] = json.dumps(body)
    response = invoke(port, event, what)
    body = response.get("body") or ""
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return response.get("statusCode"), body


def sqs_event(message, queue_arn):
    """The SQS event the event source mapping hands a function for one message."""
    attributes = message.get("Attributes", {})
    return {"Records": [{
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
            "SenderId": attributes.get("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
            "ApproximateFirstReceiveTimestamp": attributes.get("ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))),
        },
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }]}


def receiver():
    """A webhook receiver on 127.0.0.1 answering 204: (its URL, the list of (headers, body) it got)."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook", received


def signed_by(secret, headers, body):
    """Whether the Standard Webhooks signature in `headers` is `secret`'s over `body`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(s.split(",", 1)[-1] == expected for s in headers["webhook-signature"].split())


def deliver(args, token, video_id, endpoint, received):
    """The analysis's announcement, from the delivery queue to the deliver function and on to the
    receiver, as the event source mapping would hand it over."""
    sqs = boto3.client("sqs", endpoint_url=args.endpoint, region_name=REGION)
    queue_arn = sqs.get_queue_attributes(QueueUrl=args.delivery_queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    deadline = time.time() + 60
    while not received and time.time() < deadline:
        messages = sqs.receive_message(QueueUrl=args.delivery_queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                       VisibilityTimeout=60, AttributeNames=["All"]).get("Messages", [])
        for message in messages:
            response = invoke(args.deliver_port, sqs_event(message, queue_arn), "deliver")
            if response != {"batchItemFailures": []}:
                fail(f"deliver: the function reported failures: {response}")
            sqs.delete_message(QueueUrl=args.delivery_queue_url, ReceiptHandle=message["ReceiptHandle"])
    if len(received) != 1:
        fail(f"deliver: the receiver got {len(received)} requests within 60 s")
    headers, body = received[0]
    payload = json.loads(body)
    if payload["type"] != "video.completed" or payload["data"]["video_id"] != video_id:
        fail(f"deliver: not the video's announcement: {body[:300]}")
    if not signed_by(endpoint["secret"], headers, body):
        fail(f"deliver: the signature is not the endpoint secret's: {headers.get('webhook-signature')}")
    status, log = api_call(args.api_port, "apigw-list-videos.json", "deliveries", token,
                           f"/api/v2/webhooks/{endpoint['id']}/deliveries")
    if status != 200 or len(log) != 1 or log[0]["status"] != "delivered" or log[0]["id"] != headers["webhook-id"]:
        fail(f"api: the endpoint's delivery log: {status} {log}")
    ok(f"deliver: video.completed posted to the endpoint, signed with its secret, logged delivered ({headers['webhook-id']})")


def analyse(args):
    status, body = api_call(args.api_port, "apigw-register.json", "register")
    if status not in (201, 409):
        fail(f"api: register: {status} {body}")
    status, body = api_call(args.api_port, "apigw-login.json", "login")
    if status != 200:
        fail(f"api: login: {status} {body}")
    token = body["access_token"]
    if args.deliver_port:
        hook_url, received = receiver()
        status, endpoint = api_call(args.api_port, "apigw-initialize-upload.json", "create a webhook", token,
                                    "/api/v2/webhooks", body={"url": hook_url, "events": ["video.completed"]})
        if status != 201 or not endpoint.get("secret", "").startswith("whsec_"):
            fail(f"api: POST /webhooks: {status} {endpoint}")
        ok(f"api: webhook endpoint {endpoint['id']} registered")
    status, init = api_call(args.api_port, "apigw-initialize-upload.json", "initialize", token)
    if status != 200 or "X-Amz-Signature" not in init.get("upload_url", ""):
        fail(f"api: initialize: {status} {init}")
    ok("api: registered, logged in, a presigned PUT handed out")
    data = open(args.clip, "rb").read()
    put = urllib.request.Request(init["upload_url"], data=data, method="PUT", headers={"Content-Type": "video/mp4"})
    with urllib.request.urlopen(put, timeout=120) as response:
        if response.status != 200:
            fail(f"s3: PUT to the presigned URL: {response.status}")
    ok(f"s3: the clip PUT to the presigned URL ({len(data)} bytes, md5 {hashlib.md5(data).hexdigest()})")

    sqs = boto3.client("sqs", endpoint_url=args.endpoint, region_name=REGION)
    queue_arn = sqs.get_queue_attributes(QueueUrl=args.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    analysed = None
    deadline = time.time() + 120
    while analysed is None and time.time() < deadline:
        messages = sqs.receive_message(QueueUrl=args.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                       VisibilityTimeout=1800, AttributeNames=["All"]).get("Messages", [])
        for message in messages:
            records = json.loads(message["Body"]).get("Records") or []
            started = time.monotonic()
            response = invoke(args.analyze_port, sqs_event(message, queue_arn), "analyze")
            seconds = time.monotonic() - started
            if response != {"batchItemFailures": []}:
                fail(f"analyze: the function reported failures: {response}")
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=message["ReceiptHandle"])
            if any(r.get("eventName", "").startswith("ObjectCreated") for r in records):
                analysed = seconds
                ok(f"analyze: the upload's S3 event, delivered through SQS, analysed in {seconds:.1f} s")
            else:
                ok(f"analyze: {json.loads(message['Body']).get('Event', 'a message')} acknowledged")
    if analysed is None:
        fail("sqs: no ObjectCreated message for the upload within 120 s")

    video_id = init["video_id"]
    status, video = api_call(args.api_port, "apigw-list-videos.json", "get video", token, f"/api/v2/videos/{video_id}")
    if status != 200 or video.get("status") != "COMPLETED":
        fail(f"api: the video is not COMPLETED: {status} {video}")
    status, frames = api_call(args.api_port, "apigw-list-videos.json", "frames", token,
                              f"/api/v2/videos/{video_id}/frames", "limit=1000")
    if status != 200:
        fail(f"api: frames: {status} {frames}")
    if not video.get("frame_count") or len(frames) != video["frame_count"]:
        fail(f"api: frame_count {video.get('frame_count')}, but {len(frames)} frames listed")
    ok(f"api: COMPLETED, {video['frame_count']} frames, {len(video['summary'].get('people') or video['summary'].get('tracks') or [])} person(s)")
    if args.expect_pexels:
        def dominant_at(second):
            entry = next(e for e in video["summary"]["timeline"] if e["second"] == second)
            return max(entry["mean"].items(), key=lambda kv: kv[1])[0]
        # the Pexels clip at the default 5 frames per second: 99 frames, crying, then laughing
        if video["frame_count"] != 99 or (dominant_at(2), dominant_at(15)) != ("sad", "happy"):
            fail(f"api: expected 99 frames, sad at 2 s and happy at 15 s; got {video['frame_count']}, "
                 f"{dominant_at(2)} and {dominant_at(15)}")
        ok("api: 99 frames, sad at 2 s, happy at 15 s")
    if args.deliver_port:
        deliver(args, token, video_id, endpoint, received)
    print(json.dumps({"video_id": video_id, "analysis_seconds": round(analysed, 3)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("resources")
    r.add_argument("--endpoint", required=True)
    a = sub.add_parser("analyse")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--queue-url", required=True)
    a.add_argument("--api-port", type=int, required=True)
    a.add_argument("--analyze-port", type=int, required=True)
    a.add_argument("--clip", required=True)
    a.add_argument("--expect-pexels", action="store_true")
    a.add_argument("--deliver-port", type=int)
    a.add_argument("--delivery-queue-url")
    args = parser.parse_args()
    if args.command == "resources":
        resources(args.endpoint)
    else:
        analyse(args)


if __name__ == "__main__":
    main()
