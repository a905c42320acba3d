//! The simulator over stdio, as the open-source `awslabs.eks-mcp-server` is run: one MCP
//! session per process, one JSON-RPC message per line on stdin and stdout, a log line per
//! request on stderr (`eks-mcp-gateway upstream --stdio`, the gateway's supervision tests).
//!
//! Requests are served concurrently (a slow call does not hold up the next one), so a call
//! can be in flight when the process is killed.
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};

use super::rpc::{self, Era, LEGACY_VERSIONS};
use super::{SimConfig, shared_state};

/// Longest line read from stdin.
const MAX_LINE: usize = 8 * 1024 * 1024;

/// Serve MCP on `input`/`output` until the input ends. `delay` holds back every call of one
/// tool (supervision tests: a call still in flight when the process dies).
pub async fn serve_stdio<R, W>(
    cfg: SimConfig,
    input: R,
    output: W,
    delay: Option<(String, Duration)>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let shared = shared_state(cfg);
    let (tx, mut rx) = mpsc::channel::<Value>(256);
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(msg) = rx.recv().await {
            let mut line = msg.to_string().into_bytes();
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let log_level = Arc::new(Mutex::new(rpc::level_index("info").unwrap_or(1)));
    let mut initialized = false;
    let mut lines = crate::stdio::LineReader::new(input, MAX_LINE);
    while let Some(line) = lines.next().await? {
        let Ok(line) = line else {
            eprintln!("eks-mcp-server(sim): dropped a line over {MAX_LINE} bytes");
            continue;
        };
        let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(&line) else {
            let _ = tx
                .send(json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": "Parse error"}}))
                .await;
            continue;
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let id = msg.get("id").cloned();
        let params = msg.get("params").cloned().unwrap_or(json!({}));
        let tool = params.get("name").and_then(Value::as_str).unwrap_or("");
        eprintln!("eks-mcp-server(sim): received {method} {tool}");
        let Some(id) = id else {
            // notifications/initialized, notifications/cancelled, …: nothing to answer.
            continue;
        };
        if method.is_empty() {
            continue; // a client's answer to a request this server never sends
        }
        if method == "initialize" {
            let requested = params["protocolVersion"].as_str().unwrap_or("");
            let version = if LEGACY_VERSIONS.contains(&requested) {
                requested
            } else {
                LEGACY_VERSIONS[LEGACY_VERSIONS.len() - 1]
            };
            initialized = true;
            let _ = tx
                .send(
                    json!({"jsonrpc": "2.0", "id": id, "result": rpc::initialize_result(version)}),
                )
                .await;
            continue;
        }
        if !initialized {
            let _ = tx
                .send(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32002, "message": "Received request before initialization was complete"}}))
                .await;
            continue;
        }
        let wait = delay
            .as_ref()
            .filter(|(name, _)| method == "tools/call" && tool == name)
            .map(|(_, d)| *d);
        let (shared, tx, log_level, method) = (
            shared.clone(),
            tx.clone(),
            log_level.clone(),
            method.to_owned(),
        );
        tokio::spawn(async move {
            if let Some(d) = wait {
                tokio::time::sleep(d).await;
            }
            let era = Era::Session {
                log_level: *log_level.lock().await,
            };
            let handled = rpc::handle(&shared, &era, &method, &params);
            if let Some(level) = handled.set_log_level {
                *log_level.lock().await = level;
            }
            for m in handled.progress.into_iter().chain(handled.related) {
                let _ = tx.send(m).await;
            }
            let answer = match handled.outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err(e) => {
                    let mut error = json!({"code": e.code, "message": e.message});
                    if let Some(data) = e.data {
                        error["data"] = data;
                    }
                    json!({"jsonrpc": "2.0", "id": id, "error": error})
                }
            };
            let _ = tx.send(answer).await;
            for m in handled.broadcast {
                let _ = tx.send(m).await;
            }
        });
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}
