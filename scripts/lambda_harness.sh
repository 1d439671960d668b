# Sourced by scripts/image-test, scripts/arm64-check and scripts/lambda-runtime-test: the AWS side
# of an analysis, on this machine. The caller defines `fail MESSAGE` and arrays `pids` (killed on its exit), and sets
# `work` (a scratch directory) and PATH (python3 with boto3 and moto, scripts/requirements.txt).
#
#   harness_moto               a private moto server and the template's table, bucket (notifying
#                              the queue), queue and delivery queue: $endpoint, $queue_url,
#                              $work/aws.env (the functions' AWS variables, KEY=VALUE)
#   harness_api                the API function (target/debug/api, built if missing) under its
#                              Runtime API, as the user's side of the upload
#   harness_runtime NAME ARG...   scripts/runtime_api.py for function NAME (port in $work/NAME.port,
#                              log in $work/NAME.log) with runtime_api.py's ARGs
#   harness_pipeline           scripts/lambda_pipeline.py: the Pexels clip uploaded through the API
#                              and analysed by the function `analyze`, checked; $video_id. When a
#                              function `deliver` runs too, the video's webhook through it
#   harness_status NAME        the Runtime API's /status line of NAME: init_ms, the last
#                              invocation's seconds, peak RSS MB

harness_moto() {
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    moto_server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
    pids+=($!)
    endpoint="http://127.0.0.1:$port"
    for _ in $(seq 1 150); do curl -sf "$endpoint/moto-api/" >/dev/null && break; sleep 0.2; done
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    python3 scripts/lambda_pipeline.py resources --endpoint "$endpoint" > "$work/resources.env" \
        || fail "moto at $endpoint: $(tail -1 "$work/moto.log")"
    queue_url="$(sed -n 's/^QUEUE_URL=//p' "$work/resources.env")"
    { printf 'AWS_ENDPOINT_URL=%s\nAWS_REGION=us-east-1\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n' "$endpoint"
      cat "$work/resources.env"; } > "$work/aws.env"
}

harness_runtime() { # name, runtime_api.py arguments
    local name="$1"; shift
    python3 scripts/runtime_api.py --function-name "$name" --port 0 --port-file "$work/$name.port" \
        --log "$work/$name.log" --deadline-seconds 900 "$@" > /dev/null 2>> "$work/$name.log" &
    pids+=($!)
    for _ in $(seq 1 100); do [ -s "$work/$name.port" ] && return; sleep 0.1; done
    tail -20 "$work/$name.log"; fail "the Runtime API for $name did not start"
}

harness_api() {
    local api_bin="${DEEPEMOTION_LAMBDA_BIN_DIR:-$ROOT/target/debug}/api"
    if [ ! -x "$api_bin" ]; then
        echo "no $api_bin: building it (the API function plays the user's side)"
        cargo build --quiet -p api --bin api || fail "cargo build -p api"
    fi
    { cat "$work/aws.env"; printf 'DEEPEMOTION_DEV=1\nDEEPEMOTION_JWT_SECRET=lambda-harness-secret-0123456789abcdef\nDEEPEMOTION_WEBHOOK_KEY=lambda-harness-webhook-key-0123456789abcdef\nAWS_LAMBDA_LOG_FORMAT=JSON\nAWS_LAMBDA_LOG_LEVEL=INFO\n'; } > "$work/api.env"
    harness_runtime api --memory-size 512 --binary "$api_bin" --env-file "$work/api.env"
}

harness_pipeline() {
    local status=0 deliver=()
    # with the deliver function running too, the finished video's webhook goes through it
    if [ -s "$work/deliver.port" ]; then
        deliver=(--deliver-port "$(cat "$work/deliver.port")"
                 --delivery-queue-url "$(sed -n 's/^DELIVERY_QUEUE_URL=//p' "$work/resources.env")")
    fi
    python3 scripts/lambda_pipeline.py analyse --endpoint "$endpoint" --queue-url "$queue_url" \
        --api-port "$(cat "$work/api.port")" --analyze-port "$(cat "$work/analyze.port")" \
        --clip "$DEEPEMOTION_SHARED_DIR/data/videos/WolfgangLanger_Pexels.mp4" --expect-pexels \
        "${deliver[@]}" > "$work/pipeline.out" || status=$?
    cat "$work/pipeline.out"
    if [ "$status" != 0 ]; then
        echo "--- the analysis function's log:"; tail -40 "$work/analyze.log"
        fail "$(grep -m1 '^FAIL' "$work/pipeline.out" | cut -c6-300)"
    fi
    video_id="$(tail -1 "$work/pipeline.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["video_id"])')"
}

harness_status() { # name -> "init_ms last_invocation_s peak_rss_mb"
    local status
    status="$(curl -sf "http://127.0.0.1:$(cat "$work/$1.port")/status")" || fail "the $1 Runtime API's /status"
    python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["init_ms"], s["invocations"][-1], s["peak_rss_mb"])' "$status"
}
