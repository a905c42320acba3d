#!/usr/bin/env python3
"""A small MCP-looking upstream that checks SigV4 with botocore, an independent implementation.

Every request to /mcp is re-signed with botocore's SigV4Auth from what actually arrived on the
wire: the method, the raw request target, the exact body bytes, the X-Amz-Date and the headers
the Authorization header says were signed. The result must equal the signature that came in.
On a match the server answers like an MCP server (JSON, or SSE for tools/call and GET); on a
mismatch it answers 403 with the AWS error shape (x-amzn-errortype InvalidSignatureException).

It is also strict about coverage: every header that arrived must be signed, except the few a
client adds after signing (user-agent, content-length) and authorization itself.

GET /stats (unsigned) returns {"verified": n, "mismatched": m, "mismatches": [...]}.

Usage: sigv4_upstream.py --service eks-mcp --region us-west-2 --key AKID=SECRET [--key ...]
Prints "LISTENING <port>" on stdout once bound to 127.0.0.1 (port 0 unless --port).
"""

import argparse
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;_.-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)
# Headers a client legitimately adds after signing, or that carry the signature.
NOT_SIGNED_OK = {"user-agent", "content-length", "authorization"}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.verified = 0
        self.mismatched = 0
        self.mismatches = []

    def ok(self):
        with self.lock:
            self.verified += 1

    def bad(self, reason):
        with self.lock:
            self.mismatched += 1
            self.mismatches.append(reason)
        print(f"MISMATCH {reason}", file=sys.stderr, flush=True)

    def snapshot(self):
        with self.lock:
            return {
                "verified": self.verified,
                "mismatched": self.mismatched,
                "mismatches": list(self.mismatches[-20:]),
            }


def verify(method, target, headers, body, keys, service, region):
    """Return None when the signature is valid, else the reason it is not."""
    auth = headers.get("authorization")
    if not auth:
        return "no authorization header"
    m = AUTH_RE.match(auth)
    if not m:
        return f"malformed authorization header: {auth[:60]}..."
    if m["service"] != service or m["region"] != region:
        return f"scope {m['region']}/{m['service']} != {region}/{service}"
    secret = keys.get(m["akid"])
    if secret is None:
        return f"unknown access key {m['akid']}"
    amz_date = headers.get("x-amz-date")
    if not amz_date or not amz_date.startswith(m["date"]):
        return "x-amz-date missing or not matching the credential scope"
    signed = m["signed"].split(";")
    present = {k.lower() for k in headers.keys()}
    unsigned = sorted(present - set(signed) - NOT_SIGNED_OK)
    if unsigned:
        return f"headers present but not signed: {unsigned}"
    missing = [h for h in signed if h not in present]
    if missing:
        return f"signed headers not present: {missing}"
    token = headers.get("x-amz-security-token")
    creds = Credentials(m["akid"], secret, token)
    signer = SigV4Auth(creds, service, region)
    req = AWSRequest(method=method, url=f"http://{headers.get('host')}{target}", data=body)
    for name in signed:
        for value in headers.get_all(name) or []:
            req.headers[name] = value
    req.context["timestamp"] = amz_date
    canonical = signer.canonical_request(req)
    string_to_sign = signer.string_to_sign(req, canonical)
    expected = signer.signature(string_to_sign, req)
    if expected != m["sig"]:
        return f"signature mismatch for {method} {target}; botocore canonical request:\n{canonical}"
    return None


def make_handler(keys, service, region, stats):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep test output quiet
            pass

        def _body(self):
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status, body, ctype, extra=None):
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _check(self, body):
            reason = verify(
                self.command, self.path, self.headers, body, keys, service, region
            )
            if reason is None:
                stats.ok()
                return True
            stats.bad(reason)
            err = {"__type": "InvalidSignatureException", "message": "The request signature we calculated does not match the signature you provided."}
            self._send(
                403,
                json.dumps(err).encode(),
                "application/json",
                {"x-amzn-errortype": "InvalidSignatureException"},
            )
            return False

        def do_GET(self):
            if self.path == "/stats":
                self._send(200, json.dumps(stats.snapshot()).encode(), "application/json")
                return
            if not self._check(b""):
                return
            event = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "stream open"}}
            self._send(200, f"event: message\ndata: {json.dumps(event)}\n\n".encode(), "text/event-stream")

        def do_DELETE(self):
            if self._check(b""):
                self._send(200, b"", "application/json")

        def do_POST(self):
            body = self._body()
            if not self._check(body):
                return
            try:
                msg = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._send(400, b'{"error":"not json"}', "application/json")
                return
            if "id" not in msg:
                self._send(202, b"", "application/json")
                return
            method = msg.get("method", "")
            result = {"echo": {"method": method, "bytes": len(body)}}
            extra = {}
            if method == "initialize":
                result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "sigv4-upstream", "version": "1"}}
                extra["mcp-session-id"] = "botocore-session-1"
            elif method == "tools/call":
                params = msg.get("params") or {}
                args_text = json.dumps(params.get("arguments", {}), ensure_ascii=False)
                result = {"content": [{"type": "text", "text": args_text[:200]}], "isError": False}
            response = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}, ensure_ascii=False)
            accept = self.headers.get("accept", "")
            if method == "tools/call" and "text/event-stream" in accept:
                self._send(200, f"event: message\ndata: {response}\n\n".encode(), "text/event-stream", extra)
            else:
                self._send(200, response.encode(), "application/json", extra)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--service", default="eks-mcp")
    ap.add_argument("--region", default="us-west-2")
    ap.add_argument("--key", action="append", default=[], help="AKID=SECRET")
    args = ap.parse_args()
    keys = dict(k.split("=", 1) for k in args.key)
    if not keys:
        ap.error("at least one --key AKID=SECRET is required")
    stats = Stats()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(keys, args.service, args.region, stats))
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
