#!/usr/bin/env python3
"""Writes the committed seed corpora fuzz/seeds/<target>/ from the project's test inputs.

Sources: tests/fixtures/adversarial (arguments, manifests, text: the issue-17 classes -
`!!merge` and `%TAG` merge tags, `..` names and namespaces, `<Kind>List` bodies - and the
issue-18 detector stress shapes), tests/redaction_corpus (labelled tool results, clean
texts), tests/fixtures (the awslabs server's real tools/list), plus hand-written protocol
messages, SSE streams and deep nesting. Each seed is spelled in its target's input format
(see the target's `//!` header). Re-run after changing a fixture:

    python3 fuzz/make_seeds.py
"""
import hashlib
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADV = ROOT / "tests/fixtures/adversarial"
CORPUS = ROOT / "tests/redaction_corpus"
OUT = ROOT / "fuzz/seeds"
MAX_SEED = 32 * 1024  # larger inputs slow every mutation; the fixtures above stay below it

seeds = {}


def add(target, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) <= MAX_SEED:
        seeds.setdefault(target, set()).add(data)


def tools_call(name, args, rid=1, meta=None):
    params = {"name": name, "arguments": args}
    if meta:
        params["_meta"] = meta
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})


STATELESS = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}

# ---- tool arguments (classify_args, jsonrpc, headers) -----------------------------------
calls = []
for f in sorted((ADV / "arguments").glob("*.json")):
    calls.append((f.name.split("__")[0], json.loads(f.read_text())))
for f in sorted((ADV / "manifests").glob("*.yaml")):
    text = f.read_text()
    calls.append(("apply_yaml", {"cluster_name": "dev", "yaml_content": text}))
    calls.append(("apply_yaml", {"cluster_name": "dev", "namespace": "payments", "yaml_content": text}))
corpus_manifest = (CORPUS / "apply-yaml-secret-manifest.yaml").read_text()
calls.append(("apply_yaml", {"cluster_name": "dev", "yaml_content": corpus_manifest}))
# Deep flow nesting (issue 17, 5): over limits.max_manifest_depth, and just under it.
for depth in (12, 99, 150):
    calls.append(("apply_yaml", {"cluster_name": "dev", "yaml_content": "x: " + "[" * depth + "]" * depth + "\n"}))
calls.append(("apply_yaml", {"cluster_name": "dev", "yaml_content": "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"}))
calls += [
    ("list_k8s_resources", {"cluster_name": "dev", "kind": "Pod", "api_version": "v1"}),
    ("list_k8s_resources", {"cluster_name": "prod", "kind": "secrets", "api_version": "v1", "namespace": "payments"}),
    ("read_k8s_resource", {"cluster_name": "dev", "kind": "ConfigMap", "api_version": "v1", "name": "app", "namespace": "payments"}),
    ("manage_k8s_resource", {"operation": "create", "cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1",
                             "body": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "payments"},
                                      "spec": {"template": {"spec": {"hostPID": True, "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]}}}}}),
    ("get_pod_logs", {"cluster_name": "dev", "namespace": "payments", "pod_name": "api-0"}),
    ("get_cloudwatch_metrics", {"cluster_name": "dev", "namespace": "ContainerInsights", "metric_name": "x"}),
    ("manage_eks_stacks", {"operation": "deploy", "cluster_name": "dev"}),
    ("add_inline_policy", {"policy_name": "p", "role_name": "r", "permissions": [{"Effect": "Allow"}]}),
    ("search_eks_documentation", {"query": "ingress"}),
    ("not_a_catalogue_tool", {}),
    ("list_k8s_resources", []),
    ("list_k8s_resources", None),
]
for tool, args in calls:
    add("classify_args", tool + "\n" + json.dumps(args))

# ---- JSON-RPC messages (jsonrpc, headers) -------------------------------------------------
messages = [tools_call(t, a, i) for i, (t, a) in enumerate(calls)]
messages += [tools_call(t, a, "s-%d" % i, STATELESS) for i, (t, a) in enumerate(calls[:8])]
tools_list = (ROOT / "tests/fixtures/awslabs-eks-mcp-server-0.2.1-tools-list.json").read_text()
messages += [
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"q","version":"1"}}}',
    '{"jsonrpc":"2.0","method":"notifications/initialized"}',
    '{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"abc"}}',
    '{"jsonrpc":"2.0","id":"d","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}',
    '{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"k8s://dev/pods"}}',
    '{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"p","arguments":{"a":"b"}}}',
    '{"jsonrpc":"2.0","id":5,"result":{"action":"accept","content":{"ok":true}}}',
    '{"jsonrpc":"2.0","id":6,"error":{"code":-32601,"message":"no"}}',
    '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_pod_logs","name":"apply_yaml"}}',
    '[{"jsonrpc":"2.0","id":8,"method":"ping"}]',
    '{"jsonrpc":"2.0","id":1.5,"method":"ping"}',
    '{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping","params":{"n":1e400,"m":-0.0,"k":123456789012345678901234567890}}',
    '{"jsonrpc":"2.0","id":"\\u0000\\ud83d\\ude00","method":"tools/call","params":{"name":"get_pod_logs","arguments":{"a":"\\u00e9"}}}',
    '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_pod_logs","arguments":[]}}',
    '{"jsonrpc":"2.0","id":9,"method":"ping"} ',
    '{"jsonrpc":"2.0","id":9,"method":"ping"}{}',
    '{"jsonrpc":"2.0","id":10,"method":"ping","params":{"x":' + "[" * 140 + "]" * 140 + "}}",
    '{"jsonrpc":"2.0","id":11,"result":' + tools_list + "}",
]
for m in messages:
    add("jsonrpc", m)

NAMES = ["mcp-method", "mcp-name", "mcp-protocol-version", "mcp-session-id", "host", "origin"]


def headers_seed(pairs, body, listener=0):
    out = bytearray([len(pairs)])
    for name, value, encoded in pairs:
        raw = value.encode()
        out += bytes([NAMES.index(name), len(raw)]) + raw + bytes([0 if encoded else 1])
    out += bytes([listener]) + body.encode()
    return bytes(out)


for i, (tool, args) in enumerate(calls[:12]):
    body = tools_call(tool, args, i, STATELESS)
    add("headers", headers_seed([("mcp-method", "tools/call", False), ("mcp-name", tool, i % 2 == 0),
                                 ("mcp-protocol-version", "2026-07-28", False), ("host", "127.0.0.1:8080", False)], body))
    add("headers", headers_seed([("mcp-method", "tools/call", False), ("mcp-name", "get_pod_logs", False)], body, 1))
add("headers", headers_seed([("host", "localhost.evil.example", False), ("origin", "http://localhost:3000", False)], messages[-8]))
add("headers", headers_seed([("host", "[::1]:8080", False), ("origin", "http://127.0.0.1.nip.io", False)], messages[-8]))
add("headers", headers_seed([("host", "localhost", False), ("origin", "null", False), ("mcp-protocol-version", "2025-06-18", False)],
                            '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'))

# ---- SSE streams ------------------------------------------------------------------------
streams = [
    "id: 7\nretry: 3000\ndata: {\"a\":1}\n\n: ka\n\n",
    "data: a\r\ndata: b\r\n\r\n",
    "\ufeffid: 0\ndata:\n\n",
    "event: message\nid: 1\ndata: " + json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "token=abc123xyz"}]}}) + "\n\n",
    "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\nevent: message\ndata: " + '{"jsonrpc":"2.0","id":2,"result":{}}' + "\n\n",
    ":\n\n:  two spaces\nid\nevent\nretry: 99x\nretry: 5\ndata\n\n",
    "id: a\0b\ndata: x\n\n",
    "data: " + "x" * 300 + "\n\n",
]
for s in streams:
    for head in (b"\xff\x0f\x01", b"\x01\x03\x2a", b"\x00\x07\x10"):
        add("sse", head + s.encode())

# ---- redaction (redact_text, redact_json) -----------------------------------------------
texts = []
for f in sorted((ADV / "text").iterdir()):
    if f.name != "README.md":
        texts.append(f.read_bytes())
for f in sorted(CORPUS.rglob("*")):
    if f.is_file() and f.suffix != ".secrets" and f.name != "README.md":
        data = f.read_bytes()
        texts.append(data)
        if f.suffix == ".json":
            for head in (b"\x01\x00", b"\x01\x01", b"\x00\x03"):
                add("redact_json", head + data)
texts += [
    b"DATABASE_URL=postgres://app:p@ssw0rd@db.internal:5432/app",
    b"kd://ppwd:@;@",
    b'DEBU[0000] {"auths": {"registry.example": {"auth": "dXNlcjpwYXNz"}}}',
    b'msg={"password":"hunter2", "user": "x"}',
    b'["--api-token", "tok3n-value-123"] -p s3cr3tpw --password hunter2',
    b"curl -u admin:Adm1nPass https://x && mysql -uroot -pR00tPass",
    b"https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/org/repo.git sig=abc%2Fdef",
    b'<password>maven-pw</password><add key="ClearTextPassword" value="nuget-pw"/>',
    b"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\n",
    b"arn:aws:secretsmanager:us-west-2:123456789012:secret:prod/db-AbCdEf sha256:0123456789abcdef",
    b"password=[REDACTED:credential_assignment] token: [REDACTED:jwt]x",
]
for t in texts:
    add("redact_text", b"\x01" + t)
    add("redact_text", b"\x00" + t[:4096])
add("redact_json", b"\x01\x01" + tools_list.encode())
add("redact_json", b"\x01\x00" + json.dumps({"env": [{"name": "DB_PASSWORD", "value": "pw-123456"}], "args": ["--token", "t0k3n-abcdef"]}).encode())
add("redact_json", b"\x01\x02" + b"log line password=hunter2\n{\"kind\":\"Secret\",\"data\":{\"a\":\"YWJj\"}}")

# ---- classify_manifest: one input per planting variant, spelling and layout --------------
for how in range(16):
    for layout in (0, 0x2B, 0x56, 0x7F):
        noise = b"kind: Secret\n---\n!!merge z: {a: b}"
        add("classify_manifest", bytes([how % 7, how % 4, how, layout, len(noise)]) + noise + bytes([1, 2, how % 2, how % 5, 0]))

if OUT.exists():
    shutil.rmtree(OUT)
total = 0
for target, items in sorted(seeds.items()):
    d = OUT / target
    d.mkdir(parents=True)
    for data in sorted(items):
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        total += len(data)
    print(f"{target}: {len(items)} seeds")
print(f"total {total} bytes")
