#!/usr/bin/env node
// Drives many real pusher-js (Node build) clients for the Python test-suite.
//
// Protocol: one JSON command per line on stdin, one JSON object per line on
// stdout (see tests/pusherjs.py for the Python side).  Nothing but protocol
// lines may reach stdout, so every kind of logging goes to stderr.
//
// Every command has `cmd`, usually `client` (a name) and optionally `req`.
// With `req` the driver answers
//   {"type":"reply","req":<req>,"ok":true,"result":...}
//   {"type":"reply","req":<req>,"ok":false,"error":"message"}
// Without `req`, failures are reported as {"type":"driver_error","message":...}.
//
// Commands: connect {key, host, port, authEndpoint?, userAuthEndpoint?,
// options?}, subscribe/unsubscribe/members {channel}, trigger {channel, event,
// data}, signin, disconnect, send_raw {event, data, channel?}, state.
//
// Asynchronous events written by the driver:
//   state           {client, previous, current}        connection state_change
//   connected       {client, socket_id}
//   error           {client, error}                    connection 'error'
//   message         {client, event, channel?, data?, user_id?}  every raw frame
//   channel_event   {client, channel, event, data, metadata?}   channel bind_global
//   user_event      {client, event, data}              pusher.user bind_global
//   watchlist_event {client, event, data}              pusher.user.watchlist bind_global
//   signed_in       {client, user_data}                user.signinDonePromise resolved
//                                                      (user_data null if sign-in failed)
//   driver_error    {message}
'use strict';

const readline = require('readline');

// Keep stdout clean: anything that logs through console goes to stderr.
const stdout = process.stdout;
for (const level of ['log', 'info', 'debug', 'warn']) {
  console[level] = (...args) => console.error(...args);
}

const Pusher = require('pusher-js');

// The package exports PusherWithEncryption; static state such as isReady and
// log lives on the base Pusher class it extends.
let PusherCore = Pusher;
while (PusherCore && !Object.prototype.hasOwnProperty.call(PusherCore, 'isReady')) {
  PusherCore = Object.getPrototypeOf(PusherCore);
}
PusherCore = PusherCore || Pusher;

// pusher-js's logger only prints when asked; send its output to stderr.
Pusher.log = (message) => process.stderr.write(`[pusher-js] ${message}\n`);

// --------------------------------------------------------------------------
// Output

// Keys of DOM-style events that point back at the socket (huge, cyclic).
const SKIPPED_KEYS = new Set(['target', 'currentTarget', 'srcElement']);
const MAX_DEPTH = 12;

/**
 * Turn any value into plain JSON data: Errors become {name, message, ...},
 * cycles become "[Circular]", functions/undefined are dropped, events lose
 * their back-references to the socket, and nesting is capped.
 */
function plain(value, depth = 0, ancestors = []) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value);
  if (typeof value === 'bigint') return value.toString();
  if (typeof value !== 'object') return undefined; // function, symbol, undefined
  if (ancestors.includes(value)) return '[Circular]';
  if (depth >= MAX_DEPTH) return '[Too deep]';
  const inner = ancestors.concat([value]);
  if (Array.isArray(value)) {
    return value.map((item) => {
      const v = plain(item, depth + 1, inner);
      return v === undefined ? null : v;
    });
  }
  const out = {};
  if (value instanceof Error) {
    out.name = value.name;
    out.message = value.message;
  } else if (Object.keys(value).length === 0 && typeof value.message === 'string') {
    out.message = value.message; // e.g. an ErrorEvent with a prototype getter
  }
  for (const [k, v] of Object.entries(value)) {
    if (SKIPPED_KEYS.has(k)) continue;
    const p = plain(v, depth + 1, inner);
    if (p !== undefined) out[k] = p;
  }
  return out;
}

function toJSON(value) {
  return JSON.stringify(plain(value));
}

function emit(obj) {
  let line;
  try {
    line = toJSON(obj); // undefined fields are omitted
  } catch (e) {
    line = JSON.stringify({ type: 'driver_error', message: `cannot serialise ${obj.type}: ${e}` });
  }
  stdout.write(line + '\n');
}

function driverError(message) {
  emit({ type: 'driver_error', message: String(message) });
}

function errorMessage(e) {
  if (e instanceof Error) return e.message || e.name;
  if (typeof e === 'string') return e;
  try {
    return toJSON(e);
  } catch (_) {
    return String(e);
  }
}

// --------------------------------------------------------------------------
// Clients

/** @type {Map<string, {name: string, pusher: any, retired: boolean, channels: WeakSet, signinPromises: WeakSet, userBound: boolean}>} */
const clients = new Map();

function getClient(cmd) {
  if (typeof cmd.client !== 'string') throw new Error('missing "client"');
  const client = clients.get(cmd.client);
  if (!client) throw new Error(`unknown client '${cmd.client}'`);
  return client;
}

function getChannel(client, name) {
  if (typeof name !== 'string') throw new Error('missing "channel"');
  const channel = client.pusher.channel(name);
  if (!channel) throw new Error(`client '${client.name}' has no channel '${name}'`);
  return channel;
}

/** Emit an event for a client unless that client has been replaced. */
function clientEmitter(client) {
  return (obj) => {
    if (!client.retired) emit({ ...obj, client: client.name });
  };
}

function connect(cmd) {
  if (typeof cmd.client !== 'string') throw new Error('missing "client"');
  if (typeof cmd.key !== 'string') throw new Error('missing "key"');
  const existing = clients.get(cmd.client);
  if (existing) {
    const state = existing.pusher.connection.state;
    if (state !== 'disconnected' && state !== 'failed') {
      throw new Error(`client '${cmd.client}' already exists (state ${state})`);
    }
    existing.retired = true; // replaced: silence its late events
  }

  const options = {
    wsHost: cmd.host || '127.0.0.1',
    wsPort: cmd.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    // 8.x: `disableStats` is deprecated (and logs a warning); stats are off
    // unless enableStats is true.
    enableStats: false,
    cluster: 'mt1',
  };
  if (cmd.authEndpoint) {
    options.channelAuthorization = { endpoint: cmd.authEndpoint, transport: 'ajax' };
  }
  if (cmd.userAuthEndpoint) {
    options.userAuthentication = { endpoint: cmd.userAuthEndpoint, transport: 'ajax' };
  }
  Object.assign(options, cmd.options || {});

  const client = {
    name: cmd.client,
    pusher: null,
    retired: false,
    channels: new WeakSet(),
    signinPromises: new WeakSet(),
    userBound: false,
  };
  const out = clientEmitter(client);
  // The Node build connects inside the constructor (Pusher.isReady is set at
  // load time), which would hide the initialized -> connecting transition.
  // Construct "not ready", bind our listeners, then connect, as a browser
  // page does when pusher-js is created before the DOM is ready.
  const wasReady = PusherCore.isReady;
  PusherCore.isReady = false;
  let pusher;
  try {
    pusher = new Pusher(cmd.key, options);
  } finally {
    PusherCore.isReady = wasReady;
  }
  client.pusher = pusher;
  clients.set(client.name, client);

  const conn = pusher.connection;
  conn.bind('state_change', ({ previous, current }) => {
    out({ type: 'state', previous, current });
    // After a reconnect pusher-js makes a new sign-in promise; report it too.
    watchSignin(client);
  });
  conn.bind('connected', (data) => {
    out({ type: 'connected', socket_id: data && data.socket_id });
  });
  conn.bind('error', (error) => {
    out({ type: 'error', error });
  });
  conn.bind('message', (m) => {
    out({ type: 'message', event: m.event, channel: m.channel, data: m.data, user_id: m.user_id });
  });
  pusher.connect();
  return { state: conn.state };
}

function subscribe(cmd) {
  const client = getClient(cmd);
  if (typeof cmd.channel !== 'string') throw new Error('missing "channel"');
  const channel = client.pusher.subscribe(cmd.channel);
  if (!client.channels.has(channel)) {
    client.channels.add(channel);
    bindChannel(client, channel);
  }
  return { subscribed: channel.subscribed, pending: channel.subscriptionPending };
}

/**
 * Report everything the channel emits, via bind_global like an application.
 * bind_global callbacks only get (event, data); the metadata pusher-js hands
 * to per-event callbacks ({user_id} for client events on presence channels)
 * is captured by wrapping this channel instance's emit().
 */
function bindChannel(client, channel) {
  const out = clientEmitter(client);
  let currentMetadata;
  const originalEmit = channel.emit;
  channel.emit = function emitWithMetadata(event, data, metadata) {
    const previous = currentMetadata;
    currentMetadata = metadata;
    try {
      return originalEmit.call(this, event, data, metadata);
    } finally {
      currentMetadata = previous;
    }
  };
  channel.bind_global((event, data) => {
    const metadata = currentMetadata && Object.keys(currentMetadata).length ? currentMetadata : undefined;
    out({ type: 'channel_event', channel: channel.name, event, data, metadata });
  });
}

function unsubscribe(cmd) {
  const client = getClient(cmd);
  if (typeof cmd.channel !== 'string') throw new Error('missing "channel"');
  client.pusher.unsubscribe(cmd.channel);
  return null;
}

function members(cmd) {
  const client = getClient(cmd);
  const channel = getChannel(client, cmd.channel);
  if (!channel.members) throw new Error(`'${cmd.channel}' is not a presence channel`);
  const all = {};
  channel.members.each((member) => {
    all[member.id] = member.info;
  });
  return { me: channel.members.me, members: all, count: channel.members.count };
}

function trigger(cmd) {
  const client = getClient(cmd);
  const channel = getChannel(client, cmd.channel);
  if (typeof cmd.event !== 'string') throw new Error('missing "event"');
  return channel.trigger(cmd.event, cmd.data);
}

function bindUser(client) {
  if (client.userBound) return;
  client.userBound = true;
  const out = clientEmitter(client);
  const user = client.pusher.user;
  user.bind_global((event, data) => out({ type: 'user_event', event, data }));
  user.watchlist.bind_global((event, data) => out({ type: 'watchlist_event', event, data }));
}

/** Emit `signed_in` once for each sign-in promise pusher-js creates. */
function watchSignin(client) {
  const user = client.pusher.user;
  const promise = user && user.signinDonePromise;
  if (!promise || client.signinPromises.has(promise)) return;
  client.signinPromises.add(promise);
  promise.then(() => {
    clientEmitter(client)({ type: 'signed_in', user_data: user.user_data });
  });
}

function signin(cmd) {
  const client = getClient(cmd);
  bindUser(client);
  client.pusher.signin();
  watchSignin(client);
  return null;
}

function disconnect(cmd) {
  const client = getClient(cmd);
  client.pusher.disconnect();
  return { state: client.pusher.connection.state };
}

function sendRaw(cmd) {
  const client = getClient(cmd);
  if (typeof cmd.event !== 'string') throw new Error('missing "event"');
  return client.pusher.send_event(cmd.event, cmd.data, cmd.channel);
}

function state(cmd) {
  const client = getClient(cmd);
  return { state: client.pusher.connection.state, socket_id: client.pusher.connection.socket_id };
}

const commands = {
  connect,
  subscribe,
  unsubscribe,
  members,
  trigger,
  signin,
  disconnect,
  send_raw: sendRaw,
  state,
};

// --------------------------------------------------------------------------
// Main loop

function handleLine(line) {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    driverError(`bad JSON command: ${e.message}: ${line.slice(0, 200)}`);
    return;
  }
  if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) {
    driverError(`command must be a JSON object: ${line.slice(0, 200)}`);
    return;
  }
  const hasReq = cmd.req !== undefined && cmd.req !== null;
  const fail = (e) => {
    const message = errorMessage(e);
    if (hasReq) emit({ type: 'reply', req: cmd.req, ok: false, error: message });
    else driverError(`${cmd.cmd}: ${message}`);
  };
  const handler = Object.prototype.hasOwnProperty.call(commands, cmd.cmd) ? commands[cmd.cmd] : null;
  if (!handler) {
    fail(new Error(`unknown command '${cmd.cmd}'`));
    return;
  }
  let result;
  try {
    result = handler(cmd);
  } catch (e) {
    fail(e);
    return;
  }
  Promise.resolve(result).then((value) => {
    if (hasReq) emit({ type: 'reply', req: cmd.req, ok: true, result: value === undefined ? null : value });
  }, fail);
}

let shuttingDown = false;

function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  for (const client of clients.values()) {
    try {
      client.pusher.disconnect();
    } catch (e) {
      process.stderr.write(`disconnecting ${client.name}: ${errorMessage(e)}\n`);
    }
  }
  // Flush what is buffered, then leave (open sockets would keep us alive).
  stdout.write('', () => process.exit(0));
}

process.on('uncaughtException', (e) => {
  process.stderr.write(`uncaught exception: ${(e && e.stack) || e}\n`);
  driverError(`uncaught exception: ${errorMessage(e)}`);
});
process.on('unhandledRejection', (e) => {
  process.stderr.write(`unhandled rejection: ${(e && e.stack) || e}\n`);
  driverError(`unhandled rejection: ${errorMessage(e)}`);
});
stdout.on('error', () => process.exit(0)); // reader went away (EPIPE)

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', handleLine);
rl.on('close', shutdown);
