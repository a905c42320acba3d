// Preloaded with `node --require` into third-party servers (e.g. server-everything) that listen on
// all interfaces: any TCP listen() without an explicit host is bound to 127.0.0.1 instead, so a
// test server is never reachable from outside the machine. Listens on a host, a path (Unix
// socket) or a handle are left alone. Once a TCP server listens, one line
// `interop-preload: listening on 127.0.0.1:PORT` goes to stderr, so a caller that asked for
// PORT=0 learns the real port.
"use strict";
const net = require("node:net");

const originalListen = net.Server.prototype.listen;

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] !== "string") {
      args.splice(1, 0, "127.0.0.1");
    }
  } else if (first && typeof first === "object" && !Array.isArray(first)) {
    // listen({port, host?, path?, ...}[, callback])
    if (first.path === undefined && first.handle === undefined && first.fd === undefined && first.host === undefined) {
      args[0] = { ...first, host: "127.0.0.1" };
    }
  } else if (first === undefined || typeof first === "function") {
    // listen([callback]): a random port on all interfaces
    args.unshift(0, "127.0.0.1");
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") {
      process.stderr.write(`interop-preload: listening on ${address.address}:${address.port}\n`);
    }
  });
  return originalListen.apply(this, args);
};
