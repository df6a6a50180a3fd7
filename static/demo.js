/* What every demo page shares: the server's demo config, a connected PushClient,
 * the connection badge in the header, and a few DOM helpers. Needs push.js. */
"use strict";

const Demo = {
  /** ``GET demo/config``: the app key and channel names; null when the demos are off. */
  async config() {
    const config = await (await fetch("demo/config")).json();
    return config.demo ? config : null;
  },

  /** A client for the demo app whose state the header badge shows. */
  connect(config, options = {}) {
    const client = new PushClient(config.key, Object.assign({authEndpoint: "demo/auth"}, options));
    Demo.showState(client.connection, document.querySelector(".state"));
    return client;
  },

  /** Keep ``badge`` saying connecting, connected, reconnecting (in N s), disconnected or failed. */
  showState(connection, badge) {
    let everConnected = false;
    let retryIn = null;
    const render = () => {
      const state = connection.state;
      everConnected = everConnected || state === "connected";
      let shown = state;
      if (state === "initialized" || state === "connecting" || state === "unavailable") {
        shown = everConnected ? "reconnecting" : "connecting";
      }
      const labels = {connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…",
                      disconnected: "Disconnected", failed: "Connection refused"};
      badge.dataset.state = shown;
      badge.textContent = labels[shown] + (shown === "reconnecting" && retryIn ? ` (in ${retryIn} s)` : "");
      badge.title = state === "connected" ? `socket ${connection.socket_id}` : "";
    };
    connection.bind("state_change", () => {
      retryIn = null;
      render();
    });
    connection.bind("connecting_in", (seconds) => {
      retryIn = seconds;
      render();
    });
    render();
  },

  /** POST ``body`` as JSON; the server's ``{"error"}`` message is thrown as an Error. */
  async post(url, body) {
    return Demo.answer(await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify(body)}));
  },

  /** GET ``url``'s JSON; errors as for :func:`post`. */
  async get(url) {
    return Demo.answer(await fetch(url));
  },

  async answer(response) {
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    return answer;
  },

  /** ``el("li", {class: "x"}, "text", child)``: text is set as text, never parsed as HTML. */
  el(tag, attributes = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    element.append(...children);
    return element;
  },

  /** "14:03:07" for a server time in seconds. */
  clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  },
};
