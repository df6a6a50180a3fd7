/* The chat demo: a presence channel per room, messages published by the server
 * (POST demo/trigger, the sender included, so each page shows each message once),
 * and a typing indicator sent as client events straight from page to page.
 * Rooms keep history: a page that joins shows the recent messages (GET demo/recent),
 * and one back from a lost connection gets what it missed from push.js, or a
 * notice when that cannot be had. */
"use strict";

const TYPING_EVERY_MS = 2000; // while typing, tell the others at most this often
const TYPING_SHOWN_MS = 4000; // show "is typing" this long after the last notice
const $ = (selector) => document.querySelector(selector);

// One user per tab: reloading keeps the same user, so others see no leave and rejoin.
const userId = sessionStorage.getItem("chat-user-id") || Array.from(crypto.getRandomValues(new Uint8Array(8)),
  (byte) => byte.toString(16).padStart(2, "0")).join("");
sessionStorage.setItem("chat-user-id", userId);

async function join(name, room) {
  const config = await Demo.config();
  const client = Demo.connect(config, {auth: {params: {user_id: userId, name}}});
  const channel = client.subscribe(config.channels.chat_prefix + room);
  const seen = new Set(); // message ids, so no message shows twice
  const typing = new Map(); // user id → timer that clears their "is typing"
  let lastTypingSent = 0;
  let joined = false;

  const say = (item) => {
    const list = $("#messages");
    list.append(item);
    list.scrollTop = list.scrollHeight;
  };
  const notice = (text) => say(Demo.el("li", {class: "notice"}, text));
  const nameOf = (member) => (member.info && member.info.name) || member.id;

  const renderMembers = () => {
    const items = [];
    channel.members.each((member) => items.push(Demo.el("li", member.id === userId ? {class: "me"} : {},
      nameOf(member) + (member.id === userId ? " (you)" : ""))));
    $("#members").replaceChildren(...items);
    $("#count").textContent = channel.members.count;
  };
  const renderTyping = () => {
    const names = [...typing.keys()].map((id) => channel.members.get(id)).filter(Boolean).map(nameOf);
    $("#typing").textContent = names.length === 0 ? "" :
      `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  };
  const stopTyping = (id) => {
    clearTimeout(typing.get(id));
    typing.delete(id);
    renderTyping();
  };

  const messageItem = (message) => {
    seen.add(message.id);
    return Demo.el("li", message.user_id === userId ? {class: "mine"} : {},
      Demo.el("span", {class: "who"}, message.name), Demo.el("span", {class: "text"}, message.text),
      Demo.el("time", {}, Demo.clock(message.time)));
  };
  // Up to where this page joined, so they all go above what arrives live.
  const showRecent = async ({offset}) => {
    if (offset === 0) return;
    const query = new URLSearchParams({channel: channel.name, before: offset + 1});
    const {messages} = await Demo.get(`demo/recent?${query}`);
    $("#messages").prepend(...messages.filter((message) => !seen.has(message.id)).map(messageItem));
  };

  channel.bind("pusher:subscription_succeeded", () => {
    renderMembers();
    if (joined) return;
    joined = true;
    notice(`You joined ${room} as ${name}`);
    if (channel.position) showRecent(channel.position).catch((error) => notice(error.message));
  });
  channel.bind("pusher:subscription_error", (error) => {
    $("#send-error").textContent = `Could not join: ${error.error}`;
  });
  const lost = () => notice("Messages sent while you were offline could not be recovered");
  channel.bind("push:resume_failed", lost);
  channel.bind("push:continuity_lost", lost);
  channel.bind("pusher:member_added", (member) => {
    renderMembers();
    notice(`${nameOf(member)} joined`);
  });
  channel.bind("pusher:member_removed", (member) => {
    stopTyping(member.id);
    renderMembers();
    notice(`${nameOf(member)} left`);
  });
  channel.bind("message", (message) => {
    if (seen.has(message.id)) return;
    stopTyping(message.user_id);
    say(messageItem(message));
  });
  channel.bind("client-typing", (data, metadata) => {
    const id = metadata.user_id;
    if (id === undefined) return; // replayed after a reconnect: stale, and without its sender
    if (!data.typing) return stopTyping(id);
    clearTimeout(typing.get(id));
    typing.set(id, setTimeout(() => stopTyping(id), TYPING_SHOWN_MS));
    renderTyping();
  });

  const sendTyping = (isTyping) => {
    if (!config.client_events) return;
    const now = Date.now();
    if (isTyping && now - lastTypingSent < TYPING_EVERY_MS) return;
    lastTypingSent = isTyping ? now : 0;
    channel.trigger("client-typing", {typing: isTyping});
  };
  const input = $("#send").elements.text;
  input.addEventListener("input", () => sendTyping(input.value !== ""));
  $("#send").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    $("#send-error").textContent = "";
    try {
      await Demo.post("demo/trigger", {channel: channel.name, event: "message", data: {user_id: userId, name, text}});
      input.value = "";
      sendTyping(false);
    } catch (error) {
      $("#send-error").textContent = error.message;
    }
    input.focus();
  });
}

$("#join").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target.elements;
  const name = form.name.value.trim();
  const room = form.room.value.trim();
  $("#join").hidden = true;
  $("#room").hidden = false;
  $("#room-title").textContent = `Room ${room}`;
  history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);
  join(name, room).catch((error) => {
    $("#send-error").textContent = error.message;
  });
  $("#send").elements.text.focus();
});

const askedRoom = new URLSearchParams(location.search).get("room");
if (askedRoom) $("#join").elements.room.value = askedRoom;
$("#join").elements.name.focus();
