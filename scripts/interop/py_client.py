"""Drives the Python `mcp` 2.3.0 client against an MCP URL and prints one JSON document.

Used by tests/it/interop.rs (run with .cache/venv-mcp/bin/python); also handy by hand:

    .cache/venv-mcp/bin/python scripts/interop/py_client.py basic --url http://127.0.0.1:8080/mcp \
        --mode auto --tool list_k8s_resources --arguments '{"cluster_name":"dev","kind":"Pod"}'
    .cache/venv-mcp/bin/python scripts/interop/py_client.py everything --url http://127.0.0.1:8080/mcp

`basic`: connect (mode `auto` lets the client probe `server/discover` and fall back to `initialize`;
mode `legacy` forces the `initialize` handshake), list tools, call one tool.

`stdio`: the same as `basic` over stdio: the client launches the command after `--` (e.g.
`eks-mcp-gateway stdio --config gw.yaml`) and speaks MCP on its stdin/stdout; `--call` (repeatable)
calls more tools.

`everything`: the session-era features of @modelcontextprotocol/server-everything: progress
notifications, elicitation (the client declares the capability and accepts), the server's
`roots/list` request on the GET stream answered by the client, resources and prompts.

Every HTTP exchange the client makes is recorded (method, Mcp-Method header, whether a session id
was sent, status, content type) so the caller can check which era was really spoken. Errors are
reported in the JSON (`"error": "..."`) with exit status 1, never as a bare traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

STATELESS_VERSIONS = {"2026-07-28"}


class HttpLog:
    """Records each HTTP request/response the MCP transport makes."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self._by_request: dict[int, dict[str, Any]] = {}

    async def on_request(self, request: httpx2.Request) -> None:
        method = None
        if request.method == "POST":
            try:
                method = json.loads(request.content).get("method")
            except (ValueError, AttributeError):
                method = None
        entry = {
            "http": request.method,
            "jsonrpc_method": method,
            "mcp_method_header": request.headers.get("mcp-method"),
            "session_id_sent": "mcp-session-id" in request.headers,
            "protocol_version_header": request.headers.get("mcp-protocol-version"),
        }
        self.exchanges.append(entry)
        self._by_request[id(request)] = entry

    async def on_response(self, response: httpx2.Response) -> None:
        entry = self._by_request.pop(id(response.request), None)
        if entry is not None:
            entry["status"] = response.status_code
            entry["content_type"] = response.headers.get("content-type", "").split(";")[0]
            entry["session_id_received"] = "mcp-session-id" in response.headers


def content_summary(blocks: list[Any]) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        item: dict[str, Any] = {"type": block.type}
        if block.type == "text":
            item["text"] = block.text
        elif block.type in ("image", "audio"):
            item["mime_type"] = block.mime_type
            item["data_len"] = len(block.data)
        elif block.type == "resource":
            item["uri"] = str(block.resource.uri)
        elif block.type == "resource_link":
            item["uri"] = str(block.uri)
        out.append(item)
    return out


def call_summary(result: types.CallToolResult) -> dict[str, Any]:
    return {
        "is_error": bool(result.is_error),
        "content": content_summary(result.content),
        "structured": result.structured_content,
    }


def make_client(url: str, mode: str, log: HttpLog, **callbacks: Any) -> tuple[Client, httpx2.AsyncClient]:
    http = create_mcp_http_client()
    http.event_hooks = {"request": [log.on_request], "response": [log.on_response]}
    transport = streamable_http_client(url, http_client=http)
    return Client(transport, mode=mode, read_timeout_seconds=30, **callbacks), http


def era_of(version: str | None) -> str:
    return "stateless" if version in STATELESS_VERSIONS else "session"


async def run_basic(args: argparse.Namespace, out: dict[str, Any]) -> None:
    log = HttpLog()
    out["http"] = log.exchanges
    callbacks: dict[str, Any] = {}
    if args.elicit_answer is not None:
        elicitations: list[str] = []
        out["elicitations"] = elicitations
        answer = json.loads(args.elicit_answer)

        async def on_elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            elicitations.append(params.message)
            if args.elicit_action != "accept":
                return types.ElicitResult(action=args.elicit_action)
            return types.ElicitResult(action="accept", content=answer)

        callbacks["elicitation_callback"] = on_elicit
    client, http = make_client(args.url, args.mode, log, **callbacks)
    async with http, client:
        out["protocol_version"] = client.protocol_version
        out["era"] = era_of(client.protocol_version)
        info = client.server_info
        out["server_name"] = info.name if info else None
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        if args.tool:
            arguments = json.loads(args.arguments) if args.arguments else {}
            out["call"] = call_summary(await client.call_tool(args.tool, arguments))


async def run_stdio(args: argparse.Namespace, out: dict[str, Any]) -> None:
    command = [c for c in args.server_command if c != "--"]
    if not command:
        raise ValueError("give the server command after --")
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(params, mode=args.mode, read_timeout_seconds=30) as client:
        out["protocol_version"] = client.protocol_version
        out["era"] = era_of(client.protocol_version)
        info = client.server_info
        out["server_name"] = info.name if info else None
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        out["calls"] = []
        for call in args.call:
            spec = json.loads(call)
            result = await client.call_tool(spec["name"], spec.get("arguments", {}))
            out["calls"].append({"name": spec["name"], **call_summary(result)})


async def run_everything(args: argparse.Namespace, out: dict[str, Any]) -> None:
    log = HttpLog()
    out["http"] = log.exchanges
    elicitations: list[dict[str, Any]] = []
    roots_requests: list[bool] = []
    logs: list[Any] = []

    async def on_elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        elicitations.append({"message": params.message})
        return types.ElicitResult(
            action="accept",
            content={"name": "Interop Tester", "check": True, "email": "tester@example.com", "integer": 7},
        )

    async def on_roots(_ctx: Any) -> types.ListRootsResult:
        roots_requests.append(True)
        return types.ListRootsResult(roots=[types.Root(uri="file:///interop/workspace", name="interop-root")])

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    client, http = make_client(
        args.url,
        "legacy",
        log,
        elicitation_callback=on_elicit,
        list_roots_callback=on_roots,
        logging_callback=on_log,
    )
    async with http, client:
        out["protocol_version"] = client.protocol_version
        out["era"] = era_of(client.protocol_version)
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)

        progress: list[dict[str, Any]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": value, "total": total})

        result = await client.call_tool(
            "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
        )
        out["progress"] = {"notifications": progress, "result": call_summary(result)}

        result = await client.call_tool("trigger-elicitation-request", {})
        out["elicitation"] = {"requests": elicitations, "result": call_summary(result)}

        # server-everything asks for the roots on the GET stream shortly after initialization;
        # wait (bounded) for that request and the client's answer to round-trip.
        for _ in range(50):
            if roots_requests:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        result = await client.call_tool("get-roots-list", {})
        out["roots"] = {"requests": len(roots_requests), "result": call_summary(result)}

        resources = await client.list_resources()
        out["resources"] = [str(r.uri) for r in resources.resources]
        templates = await client.list_resource_templates()
        out["resource_templates"] = [t.uri_template for t in templates.resource_templates]
        if resources.resources:
            first = resources.resources[0]
            read = await client.read_resource(str(first.uri))
            out["read"] = [
                {"uri": str(c.uri), "text_len": len(getattr(c, "text", "") or ""), "blob_len": len(getattr(c, "blob", "") or "")}
                for c in read.contents
            ]
        prompts = await client.list_prompts()
        out["prompts"] = sorted(p.name for p in prompts.prompts)
        got = await client.get_prompt("args-prompt", {"city": "Seattle", "state": "WA"})
        out["prompt"] = [
            {"role": m.role, "text": m.content.text if m.content.type == "text" else None} for m in got.messages
        ]
        out["log_messages"] = [str(entry) for entry in logs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    basic = sub.add_parser("basic", help="connect, list tools, call one tool")
    basic.add_argument("--url", required=True)
    basic.add_argument("--mode", default="auto", help="auto (probe server/discover, fall back) or legacy")
    basic.add_argument("--tool", help="tool to call after listing")
    basic.add_argument("--arguments", help="tool arguments as a JSON object")
    basic.add_argument(
        "--elicit-answer", help="declare the elicitation capability and accept every request with this JSON object"
    )
    basic.add_argument(
        "--elicit-action",
        default="accept",
        choices=["accept", "decline", "cancel"],
        help="how the elicitation callback answers (decline and cancel send no content)",
    )
    stdio = sub.add_parser("stdio", help="launch a command, speak MCP over its stdio: list tools, call tools")
    stdio.add_argument("--mode", default="auto", help="auto (probe server/discover, fall back) or legacy")
    stdio.add_argument(
        "--call", action="append", default=[], help='a tool call as JSON: {"name": ..., "arguments": {...}}'
    )
    stdio.add_argument("server_command", nargs=argparse.REMAINDER, help="-- command and its arguments")
    everything = sub.add_parser("everything", help="server-everything features (session era)")
    everything.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds")
    args = parser.parse_args()

    out: dict[str, Any] = {"command": args.command}
    runner = {"basic": run_basic, "stdio": run_stdio, "everything": run_everything}[args.command]
    status = 0
    try:
        asyncio.run(asyncio.wait_for(runner(args, out), args.timeout))
    except BaseException as exc:  # report every failure as data for the test to show
        status = 1
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=8)
    json.dump(out, sys.stdout, default=str)
    sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
