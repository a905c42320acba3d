"""MCP conformance fixture: a Streamable HTTP server (Python `mcp` 2.3.0 `MCPServer`) exposing the
tools, resources and prompts the @modelcontextprotocol/conformance server scenarios expect
(`test_simple_text`, `test://static-text`, `test_simple_prompt`, ...).

The conformance package does not ship its fixture; this one is written for the project from the
scenario descriptions (`conformance list`, and each scenario's "Server Implementation
Requirements"). It speaks both protocol eras, because the SDK does: `initialize` + sessions
(2025-03-26 .. 2025-11-25) and the stateless `server/discover` era (2026-07-28). So it also serves
as the dual-era backend in the Python client tests.

    .cache/venv-mcp/bin/python scripts/interop/fixture_server.py [--port 0]

It binds 127.0.0.1 only and prints one line `{"listening": "http://127.0.0.1:PORT/mcp"}` on stdout
once it accepts connections. DNS-rebinding protection is on (Host and Origin must be loopback),
as the SDK does by default for a loopback server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import sys
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.streamable_http import EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY, JSONRPCMessage

# A 1x1 red PNG and a 1-sample 8 kHz mono 8-bit WAV: the smallest valid media of each kind.
RED_PIXEL_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e221bc330000000049454e44ae426082"
    )
).decode()
TINY_WAV = base64.b64encode(
    b"RIFF" + (37).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (1).to_bytes(4, "little") + b"\x80"
).decode()

server = MCPServer(name="eks-mcp-gateway-conformance-fixture", version="1.0.0")
subscriptions: set[str] = set()


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def image() -> types.ImageContent:
    return types.ImageContent(type="image", data=RED_PIXEL_PNG, mime_type="image/png")


def embedded(uri: str, body: str) -> types.EmbeddedResource:
    return types.EmbeddedResource(
        type="resource",
        resource=types.TextResourceContents(uri=uri, mime_type="text/plain", text=body),
    )


# ---- tools ---------------------------------------------------------------------------------------


@server.tool(description="Returns a simple text content block")
def test_simple_text() -> types.CallToolResult:
    return types.CallToolResult(content=[text("This is a simple text response for testing.")])


@server.tool(description="Returns an image content block (1x1 red PNG)")
def test_image_content() -> types.CallToolResult:
    return types.CallToolResult(content=[image()])


@server.tool(description="Returns an audio content block (audio/wav)")
def test_audio_content() -> types.CallToolResult:
    return types.CallToolResult(content=[types.AudioContent(type="audio", data=TINY_WAV, mime_type="audio/wav")])


@server.tool(description="Returns an embedded text resource")
def test_embedded_resource() -> types.CallToolResult:
    return types.CallToolResult(content=[embedded("test://embedded-resource", "This is an embedded resource content.")])


@server.tool(description="Returns text, image and resource content together")
def test_multiple_content_types() -> types.CallToolResult:
    return types.CallToolResult(
        content=[
            text("Multiple content types test:"),
            image(),
            embedded("test://mixed-content-resource", '{"test": "data", "value": 123}'),
        ]
    )


@server.tool(description="Sends three log messages while it runs")
async def test_tool_with_logging(ctx: Context) -> types.CallToolResult:
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.info(message)
        await asyncio.sleep(0.05)
    return types.CallToolResult(content=[text("Tool with logging executed successfully")])


@server.tool(description="Always fails with a tool error (isError: true)")
def test_error_handling() -> types.CallToolResult:
    return types.CallToolResult(
        content=[text("This tool intentionally returns an error for testing")], is_error=True
    )


@server.tool(description="Reports progress 0, 50 and 100 of 100")
async def test_tool_with_progress(ctx: Context) -> types.CallToolResult:
    for step in (0, 50, 100):
        await ctx.report_progress(step, 100)
        if step < 100:
            await asyncio.sleep(0.05)
    return types.CallToolResult(content=[text("Tool with progress executed successfully")])


@server.tool(description="Asks the client for an LLM completion (sampling)")
async def test_sampling(prompt: str, ctx: Context) -> types.CallToolResult:
    result = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=text(prompt))],
        max_tokens=100,
        related_request_id=ctx.request_id,
    )
    reply = result.content.text if isinstance(result.content, types.TextContent) else str(result.content)
    return types.CallToolResult(content=[text(f"LLM response: {reply}")])


async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.CallToolResult:
    result = await ctx.session.elicit(message, schema, related_request_id=ctx.request_id)
    return types.CallToolResult(
        content=[text(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")]
    )


@server.tool(description="Asks the user for a username and an email (elicitation)")
async def test_elicitation(message: str, ctx: Context) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    return await elicit(ctx, message, schema)


@server.tool(description="Elicitation whose schema has a default for every primitive type (SEP-1034)")
async def test_elicitation_sep1034_defaults(ctx: Context) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "default": True},
        },
    }
    return await elicit(ctx, "Please review and update the form fields with defaults", schema)


@server.tool(description="Elicitation with the five enum schema variants (SEP-1330)")
async def test_elicitation_sep1330_enums(ctx: Context) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
    }
    return await elicit(ctx, "Please select options from the enum fields", schema)


@server.tool(
    description="Interop check (not a conformance scenario): elicits with no related request, so in the "
    "session era the server sends elicitation/create on the standalone GET stream"
)
async def interop_elicitation_on_get_stream(ctx: Context) -> types.CallToolResult:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    result = await ctx.session.elicit("Which cluster?", schema, related_request_id=None)
    return types.CallToolResult(
        content=[text(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")]
    )


@server.tool(description="Tool with JSON Schema 2020-12 features")
def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(content=[text(f"Received name={name!r}, address={json.dumps(address)}")])


# The scenario checks that `$schema`, `$defs` and `additionalProperties` reach the client verbatim,
# so the listed schema is written out rather than derived from the signature.
server._tool_manager.get_tool("json_schema_2020_12_tool").parameters = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


@server.tool(description="Echoes a parameter that clients mirror into the Mcp-Param-Region header (SEP-2243)")
def test_custom_header(region: str) -> types.CallToolResult:
    return types.CallToolResult(content=[text(f"region={region}")])


server._tool_manager.get_tool("test_custom_header").parameters = {
    "type": "object",
    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
    "required": ["region"],
}


@server.tool(description="Closes its SSE response stream mid-call; the result arrives after the client resumes (SEP-1699)")
async def test_reconnection(ctx: Context) -> types.CallToolResult:
    await asyncio.sleep(0.05)
    await ctx.close_sse_stream()
    await asyncio.sleep(0.1)
    return types.CallToolResult(content=[text("Reconnection test completed successfully")])


# ---- 2026-07-28 InputRequiredResult (MRTR, SEP-2322) ------------------------------------------
# In the stateless era a server cannot send requests to the client; a tool instead answers with
# `resultType: "input_required"` and the client retries the call with `inputResponses` (and the
# echoed `requestState`, which the SDK seals, so a tampered one is rejected).


def ask_name(message: str = "What is your name?") -> types.ElicitRequest:
    return types.ElicitRequest(
        method="elicitation/create",
        params=types.ElicitRequestFormParams(
            message=message,
            requested_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        ),
    )


def ask_llm(prompt: str, max_tokens: int) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(
        method="sampling/createMessage",
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=text(prompt))], max_tokens=max_tokens
        ),
    )


def ask_roots() -> types.ListRootsRequest:
    return types.ListRootsRequest(method="roots/list", params=None)


def answer(ctx: Context, key: str, kind: type) -> Any:
    """The client's response under `key`, if it is of the expected kind."""
    value = (ctx.input_responses or {}).get(key)
    return value if isinstance(value, kind) else None


def sampled_text(result: Any) -> str:
    content = getattr(result, "content", None)
    return content.text if isinstance(content, types.TextContent) else str(content)


def need(requests: dict[str, Any], state: str | None = None) -> types.InputRequiredResult:
    return types.InputRequiredResult(input_requests=requests, request_state=state)


@server.tool(description="Asks for the user's name through an InputRequiredResult, then greets them")
def test_input_required_result_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    name = answer(ctx, "user_name", types.ElicitResult)
    if name is None or not isinstance(name.content, dict) or "name" not in name.content:
        return need({"user_name": ask_name()})
    return types.CallToolResult(content=[text(f"Hello, {name.content['name']}!")])


@server.tool(description="Asks the client's LLM a question through an InputRequiredResult")
def test_input_required_result_sampling(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    reply = answer(ctx, "capital_question", (types.CreateMessageResult, types.CreateMessageResultWithTools))
    if reply is None:
        return need({"capital_question": ask_llm("What is the capital of France?", 100)})
    return types.CallToolResult(content=[text(f"The model answered: {sampled_text(reply)}")])


@server.tool(description="Asks for the client's roots through an InputRequiredResult")
def test_input_required_result_list_roots(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    roots = answer(ctx, "client_roots", types.ListRootsResult)
    if roots is None:
        return need({"client_roots": ask_roots()})
    listed = ", ".join(str(r.uri) for r in roots.roots) or "(none)"
    return types.CallToolResult(content=[text(f"Client roots: {listed}")])


@server.tool(description="Round-trips requestState through an InputRequiredResult")
def test_input_required_result_request_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    confirm = types.ElicitRequest(
        method="elicitation/create",
        params=types.ElicitRequestFormParams(
            message="Please confirm",
            requested_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
        ),
    )
    if answer(ctx, "confirm", types.ElicitResult) is None or ctx.request_state != "confirm-round-1":
        return need({"confirm": confirm}, "confirm-round-1")
    return types.CallToolResult(content=[text("Confirmed: state-ok")])


@server.tool(description="Asks for elicitation, sampling and roots in one InputRequiredResult")
def test_input_required_result_multiple_inputs(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    name = answer(ctx, "user_name", types.ElicitResult)
    greeting = answer(ctx, "greeting", (types.CreateMessageResult, types.CreateMessageResultWithTools))
    roots = answer(ctx, "client_roots", types.ListRootsResult)
    if name is None or greeting is None or roots is None or ctx.request_state != "multiple-round-1":
        requests = {"user_name": ask_name(), "greeting": ask_llm("Generate a greeting", 50), "client_roots": ask_roots()}
        return need(requests, "multiple-round-1")
    return types.CallToolResult(
        content=[text(f"name={json.dumps(name.content)}, greeting={sampled_text(greeting)}, roots={len(roots.roots)}")]
    )


@server.tool(description="Two InputRequiredResult rounds with evolving requestState, then a result")
def test_input_required_result_multi_round(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    color_schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    step2 = types.ElicitRequest(
        method="elicitation/create",
        params=types.ElicitRequestFormParams(message="Step 2: What is your favorite color?", requested_schema=color_schema),
    )
    if ctx.request_state == "multi-round-2" and answer(ctx, "step2", types.ElicitResult) is not None:
        color = answer(ctx, "step2", types.ElicitResult).content
        return types.CallToolResult(content=[text(f"Completed both rounds: {json.dumps(color)}")])
    if ctx.request_state == "multi-round-1" and answer(ctx, "step1", types.ElicitResult) is not None:
        return need({"step2": step2}, "multi-round-2")
    return need({"step1": ask_name("Step 1: What is your name?")}, "multi-round-1")


@server.tool(description="Issues an integrity-protected requestState; a tampered one is rejected")
def test_input_required_result_tampered_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    if ctx.request_state == "tamper-check-round-1" and answer(ctx, "user_name", types.ElicitResult) is not None:
        return types.CallToolResult(content=[text("requestState verified")])
    return need({"user_name": ask_name()}, "tamper-check-round-1")


@server.tool(description="Asks only for inputs the client declared capabilities for")
def test_input_required_result_capabilities(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    caps = ctx.client_capabilities
    requests: dict[str, Any] = {}
    if caps is not None and caps.sampling is not None and answer(ctx, "llm", types.CreateMessageResult) is None:
        requests["llm"] = ask_llm("Say hello", 20)
    if caps is not None and caps.elicitation is not None and answer(ctx, "user_name", types.ElicitResult) is None:
        requests["user_name"] = ask_name()
    if caps is not None and caps.roots is not None and answer(ctx, "client_roots", types.ListRootsResult) is None:
        requests["client_roots"] = ask_roots()
    if requests:
        return need(requests)
    return types.CallToolResult(content=[text("No further input needed")])


@server.tool(description="Needs the client's sampling capability; without it the call fails with -32021")
def test_missing_capability(ctx: Context) -> types.CallToolResult:
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        required = types.MissingRequiredClientCapabilityErrorData(
            required_capabilities=types.ClientCapabilities(sampling=types.SamplingCapability())
        )
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            "this tool needs the sampling capability, which the client did not declare",
            required.model_dump(by_alias=True, exclude_none=True),
        )
    return types.CallToolResult(content=[text("The client declared sampling")])


# ---- resources -----------------------------------------------------------------------------------


@server.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@server.resource(
    "test://static-binary", name="static-binary", description="A static binary resource (PNG)", mime_type="image/png"
)
def static_binary() -> bytes:
    return base64.b64decode(RED_PIXEL_PNG)


@server.resource(
    "test://watched-resource", name="watched-resource", description="A resource clients may subscribe to",
    mime_type="text/plain",
)
def watched_resource() -> str:
    return "Watched resource content."


@server.resource(
    "test://template/{id}/data", name="template-data", description="A templated resource", mime_type="application/json"
)
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


async def on_subscribe(_ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def on_unsubscribe(_ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.discard(str(params.uri))
    return types.EmptyResult()


async def on_set_level(_ctx: Any, _params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


# ---- prompts -------------------------------------------------------------------------------------


@server.prompt(description="A prompt without arguments")
def test_simple_prompt() -> list[Message]:
    return [UserMessage(content=text("This is a simple prompt for testing."))]


@server.prompt(description="A prompt with two required arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
    return [UserMessage(content=text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]


@server.prompt(description="A prompt that embeds a resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:  # noqa: N803 (wire name)
    return [
        UserMessage(content=embedded(resourceUri, "Embedded resource content for testing.")),
        UserMessage(content=text("Please process the embedded resource above.")),
    ]


@server.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list[Message]:
    return [
        UserMessage(content=image()),
        UserMessage(content=text("Please analyze the image above.")),
    ]


@server.prompt(description="A prompt that first asks the user for context (InputRequiredResult)")
def test_input_required_result_prompt(ctx: Context) -> list[Message] | types.InputRequiredResult:
    context = answer(ctx, "user_context", types.ElicitResult)
    if context is None or not isinstance(context.content, dict):
        schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
        return need(
            {
                "user_context": types.ElicitRequest(
                    method="elicitation/create",
                    params=types.ElicitRequestFormParams(
                        message="What context should the prompt use?", requested_schema=schema
                    ),
                )
            }
        )
    return [UserMessage(content=text(f"Use this context: {context.content.get('context')}"))]


@server.completion()
async def complete(ref: Any, argument: types.CompletionArgument, _context: Any) -> types.Completion:
    candidates = ["paris", "park", "party"]
    return types.Completion(values=[c for c in candidates if c.startswith(argument.value)], total=None, has_more=False)


lowlevel = server._lowlevel_server  # the SDK's MCPServer has no decorators for these three
lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)
lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)


class MemoryEventStore(EventStore):
    """Keeps every SSE event of the process so a client can resume a stream with Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, JSONRPCMessage | None]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: Any) -> str | None:
        position = next((i for i, e in enumerate(self.events) if e[0] == last_event_id), None)
        if position is None:
            return None
        stream_id = self.events[position][1]
        for event_id, stream, message in self.events[position + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


async def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    app = server.streamable_http_app(
        streamable_http_path="/mcp", host="127.0.0.1", event_store=MemoryEventStore(), retry_interval=200
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)

    async def announce() -> None:
        while not uv.started:
            await asyncio.sleep(0.02)
        bound = sock.getsockname()[1]
        print(json.dumps({"listening": f"http://127.0.0.1:{bound}/mcp"}), flush=True)

    await asyncio.gather(uv.serve(sockets=[sock]), announce())


def main() -> int:
    parser = argparse.ArgumentParser(description="MCP conformance fixture server (loopback only)")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    args = parser.parse_args()
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
