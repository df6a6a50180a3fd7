/* The admin console: nodes (polled), apps and channels, the debug console's live feed, actions.
   Everything the server sends is shown with textContent, never parsed as HTML. */
"use strict";

const POLL_MS = 2000;
let csrf = null;
let feed = null; // the debug console's WebSocket while watching

function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) {
    element.append(child instanceof Node ? child : String(child ?? "")); // text, never HTML
  }
  return element;
}

function byId(id) { return document.getElementById(id); }

function setState(state, text) {
  const badge = byId("state");
  badge.dataset.state = state;
  badge.textContent = text;
}

/** A JSON request to the admin API; a lost session goes back to the login form. */
async function api(path, options = {}) {
  const headers = {"Accept": "application/json"};
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = csrf;
  }
  const response = await fetch(`api/${path}`, {
    method: options.body === undefined ? "GET" : "POST", headers, credentials: "same-origin",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) {
    window.location.assign("login");
    throw new Error("logged out");
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], {hour12: false});
}

// -- nodes ---------------------------------------------------------------------------

async function refreshNodes() {
  try {
    const answer = await api("nodes");
    const rows = answer.nodes.map((node) => {
      const broker = node.broker || {};
      const drain = el("button", {type: "button", class: "quiet", "data-node": node.node}, "Drain");
      drain.disabled = node.draining;
      drain.addEventListener("click", () => drainNode(node.node));
      const row = el("tr", {"data-node": node.node, "data-draining": String(node.draining)});
      const cells = [
        node.node === answer.node ? `${node.node} (this one)` : node.node, node.address, node.pid,
        duration(node.uptime), node.connections, node.channels, node.subscriptions,
        `${(node.loop_lag * 1000).toFixed(1)} ms`, `${(node.rss_bytes / 1048576).toFixed(1)} MB`,
        `${broker.kind || "?"}${broker.connected === false ? " (down)" : ""}`,
        node.draining ? "draining" : "serving",
      ].map((value) => el("td", {}, value));
      cells[9].className = broker.connected === false ? "bad" : "ok";
      row.append(...cells, el("td"));
      row.lastChild.append(drain);
      return row;
    });
    byId("nodes-table").tBodies[0].replaceChildren(...rows);
    const total = answer.nodes.reduce((sum, node) => sum + node.connections, 0);
    byId("nodes-summary").textContent = `${answer.nodes.length} live, ${total} connections`;
    byId("nodes-error").textContent = "";
    setState("connected", "Live");
  } catch (error) {
    byId("nodes-error").textContent = `Nodes: ${error.message}`;
    setState("reconnecting", "Retrying…");
  }
}

async function drainNode(node) {
  if (!window.confirm(`Drain node ${node}? Its clients reconnect elsewhere and it stops.`)) return;
  try {
    await api(`nodes/${node}/drain`, {body: {}});
  } catch (error) {
    byId("nodes-error").textContent = `Drain: ${error.message}`;
  }
  refreshNodes();
}

/** Poll every two seconds while the tab is visible; a hidden tab asks nothing. */
function pollNodes() {
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (!document.hidden) timer = setTimeout(async () => { await refreshNodes(); schedule(); }, POLL_MS);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshNodes();
    schedule();
  });
  refreshNodes().then(schedule);
}

// -- apps and channels ---------------------------------------------------------------

function selectedApp() { return byId("app").value; }

async function refreshApp() {
  const answer = await api("apps");
  const app = answer.apps.find((a) => a.id === selectedApp());
  byId("app-summary").textContent = app
    ? `key ${app.key}, ${app.enabled ? "enabled" : "disabled"}, ${app.connections} connection(s) on all nodes`
    : "";
  await searchChannels();
}

async function searchChannels() {
  const prefix = byId("channel-prefix").value;
  const answer = await api(`apps/${encodeURIComponent(selectedApp())}/channels?prefix=${encodeURIComponent(prefix)}`);
  const rows = answer.channels.map((channel) => {
    const row = el("tr", {}, el("td"), el("td", {}, channel.subscription_count),
      el("td", {}, channel.user_count === undefined ? "" : channel.user_count), el("td"));
    row.cells[0].append(el("code", {}, channel.name));
    if (channel.user_count !== undefined) {
      const show = el("button", {type: "button", class: "quiet"}, "Members");
      show.addEventListener("click", () => showMembers(channel.name));
      row.cells[3].append(show);
    }
    return row;
  });
  byId("channels-table").tBodies[0].replaceChildren(...rows);
  byId("channels-summary").textContent = answer.total > answer.channels.length
    ? `${answer.total} occupied channels, the first ${answer.channels.length} shown`
    : `${answer.total} occupied channel(s)`;
}

async function showMembers(channel) {
  const answer = await api(`apps/${encodeURIComponent(selectedApp())}/members?channel=${encodeURIComponent(channel)}`);
  byId("members-channel").textContent = channel;
  byId("members-list").replaceChildren(...answer.members.map((member) =>
    el("li", {}, member.user_id, member.user_info === null ? "" : `  ${JSON.stringify(member.user_info)}`)));
  byId("members").hidden = false;
}

// -- the debug console ---------------------------------------------------------------

const MAX_LINES = 500;

function describe(event) {
  switch (event.kind) {
    case "published":
      return `${event.source} ${event.event} on ${event.channel}${event.user_id ? ` by user ${event.user_id}` : ""}: ${event.data}`;
    case "connection_opened": return `socket ${event.socket_id}`;
    case "connection_closed":
      return `socket ${event.socket_id} closed ${event.code}${event.user_id ? ` (user ${event.user_id})` : ""}`;
    case "connection_refused": return `refused: ${event.reason}`;
    case "subscribed": case "unsubscribed": return `socket ${event.socket_id} ${event.channel}`;
    case "subscription_refused": return `socket ${event.socket_id} ${event.channel}: ${event.status}`;
    case "webhook":
      return `${event.url} ${event.outcome}${event.status ? ` ${event.status}` : ""} in ${event.ms} ms: ${event.count} event(s) ${event.events.join(", ")}`;
    case "webhook_dropped": return `${event.url}: ${event.count} event(s) dropped (${event.reason})`;
    default: return JSON.stringify(event);
  }
}

function logLine(kind, when, detail) {
  const list = byId("debug-events");
  list.prepend(el("li", {"data-kind": kind}, el("span", {class: "when"}, when),
    el("span", {class: "kind"}, kind), el("span", {class: "detail"}, detail)));
  while (list.children.length > MAX_LINES) list.lastChild.remove();
}

function showBatch(batch) {
  for (const event of batch.events) {
    logLine(event.kind, `${clock(event.time)} node ${event.node}`, describe(event));
  }
  if (batch.skipped) logLine("skipped", `node ${batch.node}`, `${batch.skipped} event(s) not shown: over the rate cap`);
}

function debugState(state, text) {
  const line = byId("debug-state");
  line.dataset.state = state;
  line.textContent = text;
  byId("debug-start").disabled = state === "watching" || state === "starting";
  byId("debug-stop").disabled = !(state === "watching" || state === "starting");
}

function startWatching(event) {
  event.preventDefault();
  stopWatching();
  const query = new URLSearchParams({channel: byId("debug-channel").value.trim(), event: byId("debug-event").value.trim()});
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const base = new URL(`api/apps/${encodeURIComponent(selectedApp())}/debug`, window.location.href);
  const socket = new WebSocket(`${scheme}//${base.host}${base.pathname}?${query}`);
  feed = socket;
  debugState("starting", "Starting…");
  socket.addEventListener("message", (message) => {
    const data = JSON.parse(message.data);
    if (data.watching !== undefined) {
      debugState("watching", `Watching app ${data.watching} on every node${data.filter.channel ? `, channel ${data.filter.channel}` : ""}${data.filter.event ? `, event ${data.filter.event}` : ""}.`);
    } else {
      showBatch(data);
    }
  });
  socket.addEventListener("close", (closed) => {
    if (feed === socket) {
      feed = null;
      debugState(closed.code === 1000 ? "idle" : "failed", closed.code === 1000 ? "Not watching." : `Stopped (${closed.code}${closed.reason ? `: ${closed.reason}` : ""}).`);
    }
  });
}

function stopWatching() {
  if (feed !== null) {
    const socket = feed;
    feed = null;
    socket.close(1000);
    debugState("idle", "Not watching.");
  }
}

// -- actions -------------------------------------------------------------------------

function result(id, ok, text) {
  const line = byId(id);
  line.dataset.ok = String(ok);
  line.textContent = text;
}

async function publishEvent(event) {
  event.preventDefault();
  const channels = byId("event-channels").value.split(",").map((c) => c.trim()).filter(Boolean);
  const name = byId("event-name").value.trim();
  try {
    await api(`apps/${encodeURIComponent(selectedApp())}/events`,
      {body: {channels, name, data: byId("event-data").value}});
    result("event-result", true, `Published ${name} on ${channels.join(", ")}.`);
  } catch (error) {
    result("event-result", false, error.message);
  }
}

async function terminateUser(event) {
  event.preventDefault();
  const user = byId("terminate-user").value.trim();
  try {
    await api(`apps/${encodeURIComponent(selectedApp())}/terminate`, {body: {user_id: user}});
    result("terminate-result", true, `Closed every connection of ${user}.`);
  } catch (error) {
    result("terminate-result", false, error.message);
  }
}

async function logOut() {
  stopWatching();
  await api("../logout", {body: {}}).catch(() => {});
  window.location.assign("login");
}

async function main() {
  const session = await api("session");
  csrf = session.csrf;
  byId("app").replaceChildren(...session.apps.map((id) => el("option", {value: id}, id)));
  byId("app").addEventListener("change", () => { stopWatching(); refreshApp(); });
  byId("channel-search").addEventListener("submit", (event) => { event.preventDefault(); searchChannels(); });
  byId("debug-form").addEventListener("submit", startWatching);
  byId("debug-stop").addEventListener("click", stopWatching);
  byId("debug-clear").addEventListener("click", () => byId("debug-events").replaceChildren());
  byId("event-form").addEventListener("submit", publishEvent);
  byId("terminate-form").addEventListener("submit", terminateUser);
  byId("logout").addEventListener("click", logOut);
  pollNodes();
  await refreshApp();
}

main().catch((error) => setState("failed", error.message));
