/* push.js: a small browser client for Pusher Channels protocol 7 (plain ES2017, no build).
 *
 *   const client = new PushClient("app-key", {authEndpoint: "/demo/auth"});
 *   client.connection.bind("state_change", ({previous, current}) => ...);
 *   const room = client.subscribe("presence-chat-lobby");
 *   room.bind("pusher:subscription_succeeded", (members) => ...);
 *   room.bind("message", (data, metadata) => ...);
 *   room.trigger("client-typing", {typing: true});
 *   room.bind("push:resume_failed", ({reason}) => reloadMessages());    // history channels only
 *   room.bind("push:continuity_lost", ({reason}) => reloadMessages());
 *
 * It follows pusher-js 8 where the two meet: the same event names, members
 * object and auth request (a form POST of socket_id and channel_name). The
 * differences: WebSocket only; a refusal (close codes 4000-4099) ends in the
 * state "failed" rather than "disconnected"; a lost connection waits in
 * "unavailable" with an exponential backoff instead of a fixed second.
 *
 * On channels that keep history it resumes (docs/history.md): it remembers the
 * epoch and offset of the last message, and when it subscribes again after a
 * reconnect the server sends what it missed, in order, before anything new.
 * "pusher:subscription_succeeded" waits until those are in. When they cannot be
 * had it emits "push:resume_failed", and "push:continuity_lost" when the server
 * says the live stream broke; both carry {reason, epoch, offset}, and the app
 * should reload what it shows. A message it already has is dropped.
 */
(function (global) {
  "use strict";

  const VERSION = "1.1.0";
  const DEFAULTS = {
    host: global.location ? global.location.host : "127.0.0.1:6001",
    forceTLS: global.location ? global.location.protocol === "https:" : false,
    authEndpoint: "/pusher/auth",
    auth: {params: {}, headers: {}}, // extra form fields and headers of the auth request
    autoConnect: true,       // false: call connect() once your callbacks are bound
    activityTimeout: 120000, // ms of silence before we ping; the server's, if shorter, wins
    pongTimeout: 30000,      // ms to wait for any frame after our ping
    unavailableTimeout: 10000, // ms of connecting before the state turns "unavailable"
    minReconnectDelay: 1000,
    maxReconnectDelay: 30000,
  };

  /** Named callbacks plus catch-all ones; a throwing callback never stops the others. */
  class Dispatcher {
    constructor() {
      this.callbacks = new Map();
      this.globalCallbacks = [];
    }

    bind(event, callback) {
      if (!this.callbacks.has(event)) this.callbacks.set(event, []);
      this.callbacks.get(event).push(callback);
      return this;
    }

    unbind(event, callback) {
      const list = this.callbacks.get(event) || [];
      this.callbacks.set(event, callback ? list.filter((c) => c !== callback) : []);
      return this;
    }

    bind_global(callback) {
      this.globalCallbacks.push(callback);
      return this;
    }

    emit(event, ...args) {
      for (const callback of this.globalCallbacks.slice()) callback(event, ...args);
      for (const callback of (this.callbacks.get(event) || []).slice()) callback(...args);
    }
  }

  /** A presence channel's members, counted per user as the server counts them. */
  class Members {
    constructor() {
      this.reset();
    }

    reset() {
      this.members = {};
      this.count = 0;
      this.myID = null;
      this.me = null;
    }

    get(id) {
      return Object.prototype.hasOwnProperty.call(this.members, id) ? {id, info: this.members[id]} : null;
    }

    each(callback) {
      for (const id of Object.keys(this.members)) callback(this.get(id));
    }

    onSubscription(presence) {
      this.members = Object.assign({}, presence.hash);
      this.count = presence.count;
      this.me = this.get(this.myID);
    }

    add(data) {
      if (!this.get(data.user_id)) this.count++;
      this.members[data.user_id] = data.user_info;
      return this.get(data.user_id);
    }

    remove(data) {
      const member = this.get(data.user_id);
      if (member) {
        delete this.members[data.user_id];
        this.count--;
      }
      return member;
    }
  }

  const isAuthorized = (name) => name.startsWith("private-") || name.startsWith("presence-");

  class Channel extends Dispatcher {
    constructor(name, client) {
      super();
      this.name = name;
      this.client = client;
      this.subscribed = false;
      this.subscriptionPending = false;
      this.position = null; // {epoch, offset} of the last message, on a history channel
      this.resuming = false; // a subscribe with resume was sent and its outcome has not arrived
      this.heldSubscription = undefined; // the subscription_succeeded value, emitted after the replay
    }

    /** The auth fields of pusher:subscribe; public channels need none. */
    async authorize(socketId) {
      return isAuthorized(this.name) ? this.client.requestAuth(socketId, this.name) : {};
    }

    /** The pusher:subscribe payload: the one place a resume extension adds its position. */
    subscriptionData(auth) {
      const data = Object.assign({channel: this.name}, auth);
      if (this.position) data.resume = this.position;
      return data;
    }

    async subscribe() {
      const socketId = this.client.connection.socket_id;
      this.subscriptionPending = true;
      let auth;
      try {
        auth = await this.authorize(socketId);
      } catch (error) {
        this.subscriptionPending = false;
        this.emit("pusher:subscription_error", {type: "AuthError", error: error.message, status: error.status});
        return;
      }
      // The connection may have changed, or the channel been left, while auth was on its way.
      if (this.client.connection.socket_id !== socketId || this.client.channels.get(this.name) !== this) return;
      const data = this.subscriptionData(auth);
      this.resuming = Boolean(data.resume);
      this.client.send("pusher:subscribe", data);
    }

    /** Send a client event (name "client-..."); false when it could not be sent now. */
    trigger(event, data) {
      if (!event.startsWith("client-")) throw new Error(`Event '${event}' does not start with 'client-'`);
      if (!isAuthorized(this.name)) throw new Error(`Client events need a private or presence channel, not ${this.name}`);
      return this.subscribed && this.client.send(event, data, this.name);
    }

    /** Every frame for this channel arrives here whole (a resume extension reads its metadata). */
    handleEvent(frame) {
      if (frame.event === "pusher_internal:subscription_succeeded") {
        this.subscriptionPending = false;
        this.subscribed = true;
        const value = this.succeeded(frame.data);
        if (this.resuming) { // the replay follows, older than this frame's position: keep ours
          this.heldSubscription = value;
          return;
        }
        this.moveTo(frame);
        this.emit("pusher:subscription_succeeded", value);
      } else if (frame.event === "pusher_internal:resume_succeeded" || frame.event === "pusher_internal:resume_failed") {
        this.resumed(frame);
      } else if (frame.event === "pusher_internal:continuity_lost") {
        this.moveTo(frame.data);
        this.emit("push:continuity_lost", frame.data);
      } else if (frame.event === "pusher:subscription_error") {
        this.subscriptionPending = false;
        this.emit("pusher:subscription_error", frame.data);
      } else if (!frame.event.startsWith("pusher_internal:")) {
        this.moveTo(frame);
        this.emit(frame.event, frame.data, frame.user_id ? {user_id: frame.user_id} : {});
      }
    }

    succeeded(data) {
      return data;
    }

    /** The replay is in (or refused): the subscription is complete, at the server's position. */
    resumed(frame) {
      this.resuming = false;
      this.moveTo(frame.data);
      this.emit("pusher:subscription_succeeded", this.heldSubscription);
      if (frame.event === "pusher_internal:resume_failed") this.emit("push:resume_failed", frame.data);
    }

    /** Adopt the position a frame (or its data) names; an epoch of null means no history. */
    moveTo({epoch, offset}) {
      if (epoch !== undefined) this.position = epoch === null ? null : {epoch, offset};
    }

    /** A message at or before our position in the same epoch: we have it already. */
    hasSeen(frame) {
      const position = this.position;
      return Boolean(position) && !frame.event.startsWith("pusher_internal:") &&
        frame.epoch === position.epoch && frame.offset <= position.offset;
    }

    /** The connection is gone: subscribe again once it is back (resuming from our position). */
    disconnect() {
      this.subscribed = false;
      this.subscriptionPending = false;
      this.resuming = false;
    }
  }

  class PresenceChannel extends Channel {
    constructor(name, client) {
      super(name, client);
      this.members = new Members();
    }

    async authorize(socketId) {
      const auth = await super.authorize(socketId);
      if (typeof auth.channel_data !== "string") throw new Error(`The auth endpoint gave no channel_data for ${this.name}`);
      this.members.myID = JSON.parse(auth.channel_data).user_id;
      return auth;
    }

    handleEvent(frame) {
      if (frame.event === "pusher_internal:member_added") {
        this.emit("pusher:member_added", this.members.add(frame.data));
      } else if (frame.event === "pusher_internal:member_removed") {
        const member = this.members.remove(frame.data);
        if (member) this.emit("pusher:member_removed", member);
      } else {
        super.handleEvent(frame);
      }
    }

    succeeded(data) {
      this.members.onSubscription(data.presence);
      return this.members;
    }

    disconnect() {
      this.members.reset();
      super.disconnect();
    }
  }

  /** One WebSocket at a time: handshake, activity checks, reconnects by close code. */
  class Connection extends Dispatcher {
    constructor(key, options) {
      super();
      this.key = key;
      this.options = options;
      this.state = "initialized";
      this.socket_id = null;
      this.socket = null;
      this.activityTimeout = null; // ms, set by each connection_established
      this.failures = 0; // attempts since the last established connection, for the backoff
      this.timers = {};
    }

    get url() {
      const scheme = this.options.forceTLS ? "wss" : "ws";
      return `${scheme}://${this.options.host}/app/${encodeURIComponent(this.key)}` +
        `?protocol=7&client=js&version=${VERSION}&flash=false`;
    }

    connect() {
      if (this.socket) return;
      if (typeof WebSocket === "undefined") return this.setState("failed", {message: "No WebSocket in this browser"});
      this.clearTimer("retry");
      this.setState("connecting");
      this.setTimer("unavailable", this.options.unavailableTimeout, () => this.setState("unavailable"));
      const socket = new WebSocket(this.url);
      socket.onmessage = (event) => this.onMessage(event.data);
      socket.onclose = (event) => this.onClose(event);
      this.socket = socket;
    }

    disconnect() {
      this.abandon();
      this.clearTimer("retry");
      this.setState("disconnected");
    }

    send(event, data, channel) {
      if (this.state !== "connected") return false;
      const frame = channel === undefined ? {event, data} : {event, data, channel};
      this.socket.send(JSON.stringify(frame));
      return true;
    }

    onMessage(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (error) {
        return this.emit("error", {type: "MessageParseError", error, data: text});
      }
      if (typeof frame.data === "string") {
        try {
          frame.data = JSON.parse(frame.data); // the server double-encodes data
        } catch (error) {
          // Data that is not JSON stays a string, as pusher-js leaves it.
        }
      }
      this.resetActivityCheck(); // any frame, pongs included, shows the connection is alive
      if (frame.event === "pusher:connection_established") return this.established(frame.data);
      if (frame.event === "pusher:ping") this.send("pusher:pong", {});
      if (frame.event === "pusher:error") this.emit("error", {type: "PusherError", data: frame.data});
      this.emit("message", frame);
    }

    established(data) {
      this.clearTimer("unavailable");
      this.failures = 0;
      this.socket_id = data.socket_id;
      const serverTimeout = data.activity_timeout ? data.activity_timeout * 1000 : Infinity;
      this.activityTimeout = Math.min(this.options.activityTimeout, serverTimeout);
      this.resetActivityCheck();
      this.setState("connected", {socket_id: this.socket_id});
    }

    /** Close codes decide: 4000-4099 and 4300+ refused, 4200-4299 at once, the rest back off. */
    onClose(event) {
      this.socket = null;
      this.socket_id = null;
      this.clearTimer("activity");
      const code = event.code;
      if (code >= 4000) this.emit("error", {type: "PusherError", data: {code, message: event.reason}});
      if ((code >= 4000 && code < 4100) || code >= 4300) {
        this.clearTimer("unavailable");
        return this.setState("failed", {code, message: event.reason});
      }
      const atOnce = code >= 4200 && code < 4300 && this.failures === 0;
      this.retryIn(atOnce ? 0 : this.backoff());
    }

    backoff() {
      const {minReconnectDelay, maxReconnectDelay} = this.options;
      const ceiling = Math.min(maxReconnectDelay, minReconnectDelay * 2 ** this.failures);
      return ceiling / 2 + Math.random() * ceiling / 2; // jitter: clients that lost one server spread out
    }

    retryIn(delay) {
      this.failures++;
      if (delay === 0) return this.connect();
      this.setState("unavailable");
      this.emit("connecting_in", Math.round(delay / 1000));
      this.setTimer("retry", delay, () => this.connect());
    }

    resetActivityCheck() {
      if (!this.activityTimeout) return;
      this.setTimer("activity", this.activityTimeout, () => {
        this.send("pusher:ping", {});
        this.setTimer("activity", this.options.pongTimeout, () => {
          this.abandon();
          this.retryIn(0);
        });
      });
    }

    /** Stop listening to the current socket and close it. */
    abandon() {
      this.clearTimer("activity");
      this.clearTimer("unavailable");
      this.socket_id = null;
      if (!this.socket) return;
      this.socket.onmessage = this.socket.onclose = null;
      this.socket.close();
      this.socket = null;
    }

    setState(state, data) {
      const previous = this.state;
      if (previous === state) return;
      this.state = state;
      this.emit("state_change", {previous, current: state});
      this.emit(state, data);
    }

    setTimer(name, delay, callback) {
      this.clearTimer(name);
      this.timers[name] = setTimeout(callback, delay);
    }

    clearTimer(name) {
      clearTimeout(this.timers[name]);
      delete this.timers[name];
    }
  }

  class PushClient extends Dispatcher {
    constructor(key, options = {}) {
      super();
      this.options = Object.assign({}, DEFAULTS, options);
      this.options.auth = Object.assign({params: {}, headers: {}}, options.auth);
      this.channels = new Map();
      this.connection = new Connection(key, this.options);
      this.connection.bind("connected", () => this.channels.forEach((channel) => channel.subscribe()));
      // Subscriptions end with their connection; "connected" makes them again on the next one.
      this.connection.bind("state_change", ({previous}) => {
        if (previous === "connected") this.channels.forEach((channel) => channel.disconnect());
      });
      this.connection.bind("message", (frame) => this.route(frame));
      if (this.options.autoConnect) this.connect();
    }

    connect() {
      this.connection.connect();
    }

    disconnect() {
      this.connection.disconnect();
    }

    subscribe(name) {
      let channel = this.channels.get(name);
      if (!channel) {
        channel = name.startsWith("presence-") ? new PresenceChannel(name, this) : new Channel(name, this);
        this.channels.set(name, channel);
      }
      if (this.connection.state === "connected" && !channel.subscribed && !channel.subscriptionPending) channel.subscribe();
      return channel;
    }

    unsubscribe(name) {
      const channel = this.channels.get(name);
      if (!channel) return;
      this.channels.delete(name);
      if (channel.subscribed || channel.subscriptionPending) this.send("pusher:unsubscribe", {channel: name});
      channel.disconnect();
    }

    channel(name) {
      return this.channels.get(name);
    }

    send(event, data, channel) {
      return this.connection.send(event, data, channel);
    }

    route(frame) {
      const channel = frame.channel === undefined ? undefined : this.channels.get(frame.channel);
      if (channel && channel.hasSeen(frame)) return; // a duplicate: never the server's intent, so drop it
      if (channel) channel.handleEvent(frame);
      if (!frame.event.startsWith("pusher_internal:")) {
        this.emit(frame.event, frame.data, {channel: frame.channel, user_id: frame.user_id});
      }
    }

    /** Ask the auth endpoint to sign a subscription, as pusher-js asks: a form POST. */
    async requestAuth(socketId, channelName) {
      const {authEndpoint, auth} = this.options;
      const body = new URLSearchParams(Object.assign({}, auth.params, {socket_id: socketId, channel_name: channelName}));
      const response = await fetch(authEndpoint, {method: "POST", headers: auth.headers, body});
      if (!response.ok) {
        const error = new Error(`Auth for ${channelName} failed: ${response.status} from ${authEndpoint}`);
        error.status = response.status;
        throw error;
      }
      return response.json();
    }
  }

  PushClient.VERSION = VERSION;
  global.PushClient = PushClient;
})(typeof window !== "undefined" ? window : globalThis);
