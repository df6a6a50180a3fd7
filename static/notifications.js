/* The notifications demo: POST demo/notify, and every page on the channel shows a toast. */
"use strict";

const TOAST_MS = 5000;

function entry(tag, attributes, notification) {
  return Demo.el(tag, Object.assign({"data-level": notification.level}, attributes),
    Demo.el("strong", {}, notification.title), notification.body,
    Demo.el("time", {class: "muted"}, " " + Demo.clock(notification.time)));
}

async function main() {
  const config = await Demo.config();
  const client = Demo.connect(config);
  client.subscribe(config.channels.notifications).bind("notification", (notification) => {
    const toast = entry("div", {class: "toast", role: "status"}, notification);
    document.getElementById("toasts").append(toast);
    setTimeout(() => toast.remove(), TOAST_MS);
    document.getElementById("empty").hidden = true;
    document.getElementById("feed").prepend(entry("li", {}, notification));
  });
  const form = document.getElementById("notify");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("notify-error");
    error.textContent = "";
    try {
      await Demo.post("demo/notify", {title: form.elements.title.value, body: form.elements.body.value,
                                      level: form.elements.level.value});
      form.reset();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
}

main();
