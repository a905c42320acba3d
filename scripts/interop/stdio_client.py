"""A minimal MCP client over stdio: launches a command (e.g. mcp-proxy-for-aws), speaks newline-
delimited JSON-RPC to it, and prints one JSON document with what came back.

    python3 scripts/interop/stdio_client.py --tool NAME --arguments '{"k": "v"}' -- \
        .cache/venv-aws/bin/mcp-proxy-for-aws http://127.0.0.1:PORT/mcp --service eks-mcp --region us-west-2

Sequence: initialize (protocol 2025-06-18, no client capabilities), notifications/initialized,
tools/list, then tools/call if --tool is given. Server-to-client requests (none expected without
capabilities) are answered with a JSON-RPC error; notifications are recorded. Standard library
only, so any Python 3.10+ runs it. Every step has a deadline; on failure the JSON carries "error"
and the child's last stderr lines, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any


class StdioPeer:
    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=30)
        self.notifications: list[dict[str, Any]] = []
        self.next_id = 1
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        request_id = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no response to {method} within {timeout}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"the server closed stdout before answering {method} (exit {self.proc.poll()})")
            line = line.strip()
            if not line:
                continue
            message = json.loads(line)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message
            if "method" in message and "id" in message:  # a server-to-client request we do not support
                self.send({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "not supported"}})
            elif "method" in message:
                self.notifications.append(message)

    def close(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", help="tool to call after tools/list")
    parser.add_argument("--arguments", default="{}", help="tool arguments as a JSON object")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per request in seconds")
    parser.add_argument("--full-tools", action="store_true", help="also print the full tools/list result")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command and arguments of the stdio server")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the server command after --")

    out: dict[str, Any] = {"command": command}
    status = 0
    peer = StdioPeer(command)
    try:
        init = peer.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "eks-mcp-gateway-interop", "version": "1.0.0"},
            },
            args.timeout,
        )
        out["initialize"] = init
        if "error" in init:
            raise RuntimeError(f"initialize failed: {init['error']}")
        peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = peer.request("tools/list", {}, args.timeout)
        if "error" in listed:
            raise RuntimeError(f"tools/list failed: {listed['error']}")
        out["tools"] = sorted(tool["name"] for tool in listed["result"]["tools"])
        if args.full_tools:
            out["tool_list"] = listed["result"]["tools"]
        if args.tool:
            called = peer.request(
                "tools/call", {"name": args.tool, "arguments": json.loads(args.arguments)}, args.timeout
            )
            out["call"] = called.get("result")
            out["call_error"] = called.get("error")
    except Exception as exc:  # reported as data for the calling test
        status = 1
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        peer.close()
        out["notifications"] = [n.get("method") for n in peer.notifications]
        out["stderr_tail"] = list(peer.stderr_tail)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
