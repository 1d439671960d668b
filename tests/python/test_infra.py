"""Static checks of the deployment files (Docker cannot run here):

- every COPY source of infra/analyze.Dockerfile exists in the repository, and the file copied out
  of the build stage is the binary cargo builds for the `analyze` crate, which is the entrypoint;
- template.yaml's zip functions name binaries that exist, its image function names this
  Dockerfile, and every function gets the environment its `from_env` requires;
- each queue's visibility timeout is at least six times its function's timeout;
- the functions may send only to the queues they use, and read only the secrets they use.

Run: .deps/tools/bin/python tests/python/test_infra.py
"""

import glob
import json
import os
import re
import shlex
import sys
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt...) kept as data."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def dockerfile_instructions(path):
    """(instruction, arguments) pairs with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return [tuple(l.split(None, 1)) if " " in l else (l, "") for l in lines]


def bin_names(crate_dir):
    manifest = tomllib.load(open(os.path.join(crate_dir, "Cargo.toml"), "rb"))
    return [b["name"] for b in manifest.get("bin", [])] or [manifest["package"]["name"]]


def test_dockerfile():
    path = os.path.join(ROOT, "infra", "analyze.Dockerfile")
    instructions = dockerfile_instructions(path)
    copies = [args for (inst, args) in instructions if inst.upper() == "COPY"]
    assert copies, "the Dockerfile copies something"
    for args in copies:
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for source in sources:
            assert glob.glob(os.path.join(ROOT, source)), f"COPY source {source} does not exist"

    analyze = bin_names(os.path.join(ROOT, "functions", "analyze"))
    assert analyze == ["analyze"], analyze
    runs = " ".join(args for (inst, args) in instructions if inst.upper() == "RUN")
    assert "cargo build --release --locked -p analyze" in runs
    assert "target/release/analyze /out/analyze" in runs, "the build stage installs the analyze binary"
    copied = [args for args in copies if "--from=build" in args]
    assert copied == ["--from=build /out/analyze /opt/deepemotion/bin/analyze"], copied
    entrypoints = [args for (inst, args) in instructions if inst.upper() == "ENTRYPOINT"]
    assert entrypoints == ['["/opt/deepemotion/bin/analyze"]'], entrypoints
    env = " ".join(args for (inst, args) in instructions if inst.upper() == "ENV")
    for var in ("DEEPEMOTION_MODELS_DIR=/opt/deepemotion/models", "ORT_DYLIB_PATH=/opt/deepemotion/lib/"):
        assert var in env, var
    # the models are resolved by the project's own setup code, with its sha256 checks
    assert "scripts/models/fetch.py" in runs
    stages = [args for (inst, args) in instructions if inst.upper() == "FROM"]
    assert len(stages) == 3, "multi-stage: build, assets, runtime"
    # ffmpeg is one static binary from a hash-pinned wheel, not Debian's ffmpeg and its libraries
    assert "DEEPEMOTION_FFMPEG=/opt/deepemotion/bin/ffmpeg" in env
    assert "--require-hashes" in runs and "scripts/requirements-image.txt" in runs
    final_stage = instructions[[i for i, (inst, _) in enumerate(instructions) if inst.upper() == "FROM"][-1]:]
    assert not any(inst.upper() == "RUN" for inst, _ in final_stage), "the runtime stage only copies"
    # Lambda runs it as a non-root user, with only /tmp writable
    users = [args for (inst, args) in final_stage if inst.upper() == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert [args for (inst, args) in final_stage if inst.upper() == "WORKDIR"][-1:] == ["/tmp"]


def test_template():
    template = yaml.load(open(os.path.join(ROOT, "template.yaml")), Loader=CfnLoader)
    resources = template["Resources"]
    env_global = template["Globals"]["Function"]["Environment"]["Variables"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {"ApiFunction", "AnalyzeFunction", "DeliverFunction"}
    # JSON lines, their level set by Lambda (AWS_LAMBDA_LOG_LEVEL), not by a RUST_LOG beside it
    logging = template["Globals"]["Function"]["LoggingConfig"]
    assert logging["LogFormat"] == "JSON" and logging["ApplicationLogLevel"] in ("INFO", "WARN", "ERROR")
    assert "RUST_LOG" not in env_global

    def env_of(function):
        return {**env_global, **function["Properties"].get("Environment", {}).get("Variables", {})}

    def statements(function, action):
        """The Resources the function's policies allow `action` on."""
        return [s["Resource"] for p in function["Properties"]["Policies"] for s in p["Statement"]
                if action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]

    for name, function in functions.items():
        env = env_of(function)
        # secrets come from Secrets Manager; the dev switch that allows literal ones is for tests
        for var in ("DEEPEMOTION_DEV", "DEEPEMOTION_JWT_SECRET", "DEEPEMOTION_WEBHOOK_KEY"):
            assert var not in env, f"{name}: {var}"

    api = functions["ApiFunction"]
    assert api["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert api["Properties"]["Runtime"] == "provided.al2023"
    assert api["Metadata"]["BuildProperties"]["Binary"] in bin_names(os.path.join(ROOT, "functions", "api"))
    api_env = {**env_global, **api["Properties"]["Environment"]["Variables"]}
    for var in ("TABLE_NAME", "BUCKET_NAME", "JWT_SECRET_ARN", "DEEPEMOTION_MAX_UPLOAD_BYTES"):
        assert var in api_env, var
    assert "DEEPEMOTION_JWT_SECRET" not in api_env, "never a literal secret"
    # the API never queues analyses (S3 notifies the queue), so it has neither that queue nor
    # the grant; it queues resent webhook deliveries, and reads the webhook key
    assert "QUEUE_URL" not in api_env
    api_actions = json.dumps(api["Properties"]["Policies"])
    assert '"s3:ListBucket"' not in api_actions
    assert statements(api, "sqs:SendMessage") == [{"GetAtt": "DeliveriesQueue.Arn"}]
    assert api_env["DELIVERY_QUEUE_URL"] == {"Ref": "DeliveriesQueue"}
    assert api_env["WEBHOOK_KEY_ARN"] == {"Ref": "WebhookKeySecret"}
    assert sorted(map(json.dumps, statements(api, "secretsmanager:GetSecretValue"))) == sorted(
        json.dumps({"Ref": r}) for r in ("JwtSecret", "WebhookKeySecret"))

    analyze = functions["AnalyzeFunction"]
    assert analyze["Properties"]["PackageType"] == "Image"
    assert os.path.isfile(os.path.join(ROOT, analyze["Metadata"]["Dockerfile"]))
    analyze_env = {**env_global, **analyze["Properties"]["Environment"]["Variables"]}
    for var in ("TABLE_NAME", "BUCKET_NAME", "QUEUE_URL", "DELIVERY_QUEUE_URL"):
        assert var in analyze_env, var
    sqs = analyze["Properties"]["Events"]["Uploads"]["Properties"]
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sorted(map(json.dumps, statements(analyze, "sqs:SendMessage"))) == sorted(
        json.dumps({"GetAtt": f"{q}.Arn"}) for q in ("AnalysisQueue", "DeliveriesQueue"))
    assert not statements(analyze, "secretsmanager:GetSecretValue"), "the worker seals nothing"

    queue = resources["AnalysisQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * analyze["Properties"]["Timeout"]
    assert "deadLetterTargetArn" in queue["RedrivePolicy"]

    # the deliver function: a zip like the API's, fed by the delivery queue
    deliver = functions["DeliverFunction"]
    assert deliver["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert deliver["Properties"]["Runtime"] == "provided.al2023"
    assert deliver["Metadata"]["BuildProperties"]["Binary"] in bin_names(os.path.join(ROOT, "functions", "deliver"))
    deliver_env = env_of(deliver)
    for var in ("TABLE_NAME", "BUCKET_NAME", "WEBHOOK_KEY_ARN", "DELIVERY_QUEUE_URL"):
        assert var in deliver_env, var
    assert deliver_env["WEBHOOK_KEY_ARN"] == {"Ref": "WebhookKeySecret"}
    # an attempt must end well inside the invocation
    assert int(deliver_env["DEEPEMOTION_WEBHOOK_TIMEOUT_SECS"]) * 2 <= deliver["Properties"]["Timeout"]
    sqs = deliver["Properties"]["Events"]["Deliveries"]["Properties"]
    assert sqs["Queue"] == {"GetAtt": "DeliveriesQueue.Arn"}
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert statements(deliver, "sqs:SendMessage") == [{"GetAtt": "DeliveriesQueue.Arn"}]
    assert statements(deliver, "secretsmanager:GetSecretValue") == [{"Ref": "WebhookKeySecret"}]
    # by key only: no queries, scans or deletes
    deliver_actions = {a for p in deliver["Properties"]["Policies"] for s in p["Statement"]
                       for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {a for a in deliver_actions if a.startswith("dynamodb:")} == {"dynamodb:GetItem", "dynamodb:PutItem"}
    queue = resources["DeliveriesQueue"]["Properties"]
    # a message handed back (a busy delivery) returns after the 60 s claim of its holder
    assert queue["VisibilityTimeout"] >= max(6 * deliver["Properties"]["Timeout"], 60)
    assert "deadLetterTargetArn" in queue["RedrivePolicy"]

    # the webhook key is a secret of its own, generated like the token secret
    key = resources["WebhookKeySecret"]
    assert key["Type"] == "AWS::SecretsManager::Secret"
    generated = key["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and generated["ExcludePunctuation"] is True

    # every variable a function reads at start-up is documented in the README
    readme = open(os.path.join(ROOT, "README.md")).read()
    for source in ("shared/aws/src/lambda.rs", "shared/http/src/lib.rs"):
        text = open(os.path.join(ROOT, source)).read()
        for var in sorted(set(re.findall(r'"((?:DEEPEMOTION_)?[A-Z][A-Z0-9]*_[A-Z0-9_]+)"', text))):
            assert f"`{var}`" in readme, f"{var} ({source}) is not documented in the README"

    notification = resources["UploadBucket"]["Properties"]["NotificationConfiguration"]
    rules = notification["QueueConfigurations"][0]["Filter"]["S3Key"]["Rules"]
    assert rules == [{"Name": "prefix", "Value": "uploads/"}]


if __name__ == "__main__":
    failed = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                fn()
                print(f"ok   {name}")
            except AssertionError as e:
                failed += 1
                print(f"FAIL {name}: {e}")
    sys.exit(1 if failed else 0)
