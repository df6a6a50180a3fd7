// The room page: stock pusher-js against the push server, nothing else.
// Messages are POSTed to Django, which publishes them to the room's presence
// channel; typing goes straight from browser to browser as a client event.
"use strict";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const csrf = { "X-CSRFToken": config.csrfToken };
//: How often at most this page says it is typing, and how long the others show it.
const TYPING_EVERY_MS = 1000;
const TYPING_SHOWN_MS = 3000;

const pusher = new Pusher(config.key, {
  cluster: "local", // required by pusher-js 8; the hosts below replace Pusher's
  wsHost: config.wsHost, wsPort: config.wsPort, wssPort: config.wsPort,
  httpHost: config.wsHost, httpPort: config.wsPort, httpsPort: config.wsPort,
  forceTLS: config.forceTLS, disableStats: true,
  channelAuthorization: { endpoint: config.channelAuthEndpoint, headers: csrf },
  userAuthentication: { endpoint: config.userAuthEndpoint, headers: csrf },
});

const state = document.getElementById("state");
function showState(current) {
  state.dataset.state = current;
  state.textContent = current;
}
showState(pusher.connection.state); // "connecting" already: the constructor connects
pusher.connection.bind("state_change", ({ current }) => showState(current));

const messages = document.getElementById("messages");
function show(className, who, text) {
  const item = document.createElement("li");
  item.className = className;
  if (who) {
    const name = item.appendChild(document.createElement("span"));
    name.className = "who";
    name.textContent = who;
  }
  const body = item.appendChild(document.createElement("span"));
  body.className = "text";
  body.textContent = text;
  messages.appendChild(item);
  item.scrollIntoView({ block: "nearest" });
}

const room = pusher.subscribe(config.channel);
const membersList = document.getElementById("members");
function showMembers() {
  const items = [];
  room.members.each((member) => {
    const item = document.createElement("li");
    const me = member.id === room.members.me.id;
    item.className = me ? "me" : "";
    item.textContent = member.info.name + (me ? " (you)" : "");
    items.push(item);
  });
  membersList.replaceChildren(...items);
  document.getElementById("count").textContent = room.members.count;
}
room.bind("pusher:subscription_succeeded", showMembers);
room.bind("pusher:subscription_error", ({ status }) => show("notice error", "", `Could not join (${status})`));
room.bind("pusher:member_added", (member) => {
  showMembers();
  show("notice", "", `${member.info.name} joined`);
});
room.bind("pusher:member_removed", (member) => {
  showMembers();
  stopTyping(member.id);
  show("notice", "", `${member.info.name} left`);
});
room.bind("message", ({ user_id, name, text }) => {
  stopTyping(user_id);
  show(user_id === room.members.me.id ? "said mine" : "said", name, text);
});

// Typing: a client event on the presence channel; the server adds the sender's user_id.
const typingText = document.getElementById("typing");
const typing = new Map(); // user id -> {name, timer}
function showTyping() {
  const names = [...typing.values()].map((who) => who.name);
  typingText.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}
function stopTyping(userId) {
  const who = typing.get(userId);
  if (!who) return;
  clearTimeout(who.timer);
  typing.delete(userId);
  showTyping();
}
room.bind("client-typing", (data, metadata) => {
  const member = room.members.get(metadata.user_id);
  if (!member) return;
  stopTyping(member.id);
  const timer = setTimeout(() => stopTyping(member.id), TYPING_SHOWN_MS);
  typing.set(member.id, { name: member.info.name, timer });
  showTyping();
});

const form = document.getElementById("say");
const input = form.elements.text;
let typingSentAt = 0;
input.addEventListener("input", () => {
  const now = Date.now();
  if (room.subscribed && now - typingSentAt >= TYPING_EVERY_MS) {
    typingSentAt = now;
    room.trigger("client-typing", {});
  }
});
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const response = await fetch(form.action, { method: "POST", body: new FormData(form) });
    if (!response.ok) {
      const reply = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
      show("notice error", "", `Not sent: ${reply.error}`);
      return;
    }
    input.value = "";
    typingSentAt = 0;
  } catch (error) {
    show("notice error", "", `Not sent: ${error.message}`);
  }
});

// Sign-in makes this connection the user's: Django's send_to_user reaches it once
// pusher-js has subscribed to the user's own channel, which the page then marks.
pusher.signin();
pusher.connection.bind("message", ({ event, channel }) => {
  if (event === "pusher_internal:subscription_succeeded" && channel?.startsWith("#server-to-user-")) {
    state.dataset.signedIn = "true";
  }
});
pusher.connection.bind("connecting", () => { delete state.dataset.signedIn; });
pusher.user.bind("mention", ({ name, text }) => show("mention", name, `mentioned you: ${text}`));
