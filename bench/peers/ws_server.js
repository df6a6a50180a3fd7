// The Node `ws` peer of bench/broadcast.py: one Node process, the `ws` library.
//
//     node bench/peers/ws_server.js --port P [--host 127.0.0.1]
//
// It answers the same minimal subset of Pusher protocol 7 as
// bench/baseline_server.py, so the bench's load client talks to both alike:
//
// - /app/{key} (WebSocket): pusher:connection_established on open;
//   pusher:subscribe answered with pusher_internal:subscription_succeeded (any
//   channel, no authorization); pusher:unsubscribe; pusher:ping -> pusher:pong.
// - POST /apps/{id}/events and /apps/{id}/batch_events: for each event and
//   channel the frame is serialised once (JSON, then one Buffer) and sent to
//   every subscriber. The request signature is NOT checked, nor is the body
//   validated (our server does both), so the HTTP figures favour this peer.
//
// No presence, no limits, no compression (ws's server default).
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

/** channel name -> the sockets subscribed to it, in subscription order. */
const channels = new Map();
let nextSocketId = 1;

function text(socket, message) {
  socket.send(JSON.stringify(message));
}

function leave(socket, channel) {
  socket.channels.delete(channel);
  const subscribers = channels.get(channel);
  if (subscribers === undefined) return;
  subscribers.delete(socket);
  if (subscribers.size === 0) channels.delete(channel);
}

function onFrame(socket, raw) {
  let frame;
  try {
    frame = JSON.parse(raw);
  } catch (error) {
    return;
  }
  const data = frame && frame.data;
  if (frame.event === "pusher:subscribe" && data && typeof data.channel === "string") {
    if (!channels.has(data.channel)) channels.set(data.channel, new Set());
    channels.get(data.channel).add(socket);
    socket.channels.add(data.channel);
    text(socket, { event: "pusher_internal:subscription_succeeded", channel: data.channel, data: "{}" });
  } else if (frame.event === "pusher:unsubscribe" && data) {
    leave(socket, data.channel);
  } else if (frame.event === "pusher:ping") {
    text(socket, { event: "pusher:pong", data: "{}" });
  }
}

/** The frame serialised once, then written to every subscriber of the channel. */
function broadcast(channel, event, data) {
  const subscribers = channels.get(channel);
  if (subscribers === undefined) return;
  const frame = Buffer.from(JSON.stringify({ event, channel, data }));
  for (const socket of subscribers) socket.send(frame, { binary: false });
}

function publish(kind, body) {
  const events = kind === "batch_events" ? body.batch : [body];
  for (const event of events) {
    for (const channel of event.channels || [event.channel]) broadcast(channel, event.name, event.data);
  }
}

const PUBLISH = /^\/apps\/[^/]+\/(events|batch_events)(\?|$)/;
const SOCKET = /^\/app\/[^/?]+(\?|$)/;

const server = http.createServer((request, response) => {
  const route = request.method === "POST" && PUBLISH.exec(request.url);
  if (!route) {
    response.writeHead(404).end();
    return;
  }
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    let status = 200;
    try {
      publish(route[1], JSON.parse(Buffer.concat(chunks)));
    } catch (error) {
      status = 400;
    }
    response.writeHead(status, { "Content-Type": "application/json", "Content-Length": 2 }).end("{}");
  });
});
server.keepAliveTimeout = 0; // the bench's publishers keep their connections for a whole run

const sockets = new WebSocketServer({ noServer: true });
server.on("upgrade", (request, stream, head) => {
  if (!SOCKET.test(request.url)) {
    stream.destroy();
    return;
  }
  sockets.handleUpgrade(request, stream, head, (socket) => {
    socket.channels = new Set();
    socket.on("message", (raw) => onFrame(socket, raw));
    socket.on("close", () => {
      for (const channel of [...socket.channels]) leave(socket, channel);
    });
    text(socket, {
      event: "pusher:connection_established",
      data: JSON.stringify({ socket_id: `1.${nextSocketId++}`, activity_timeout: 120 }),
    });
  });
});

server.listen(Number(option("port")), option("host", "127.0.0.1"));
process.on("SIGTERM", () => process.exit(0));
