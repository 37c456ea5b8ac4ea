// What every page shares: the JSON API, building DOM nodes (text only, never HTML), relative
// times, the counts, and the live feed with reconnection.
//
// The pages hold no token: the `tracking_admin` cookie set by POST /login authenticates every
// request, and a 401 sends the browser back to the login page.

// When this page was loaded; it stays the same for as long as the page is not reloaded, which
// the browser tests use to tell a live update from a reload.
if (window.__loadedAt === undefined) {
  window.__loadedAt = Date.now();
}

/** An answer of the API other than 2xx, with its `{"error", "details"}` body. */
export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || [];
  }
}

/** Sends the browser to the login page, once. */
function toLogin() {
  if (!toLogin.going) {
    toLogin.going = true;
    window.location.assign("/login");
  }
}

/**
 * Calls the JSON API: `api("/v1/bans")`, `api("/v1/bans", { method: "POST", body: {...} })`.
 * Resolves to the parsed answer; rejects with an ApiError carrying the API's own message.
 * A 401 means the login cookie is gone, and sends the browser to the login page, unless
 * `login: false` (for a route that may want another token than the cookie's).
 */
export async function api(path, { method = "GET", body, login = true } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `The agent did not answer (${error.message}).`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (response.status === 401 && login) {
    toLogin();
  }
  if (!response.ok) {
    const message =
      json && typeof json.error === "string" ? json.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, json && Array.isArray(json.details) ? json.details : []);
  }
  return json;
}

/**
 * Makes an element. `props`: `class`, `text` (set as textContent), `dataset` (an object), and
 * any other attribute by name. Children: nodes or strings (text nodes). No HTML is parsed, so
 * whatever the data holds is shown as text.
 */
export function el(tag, props = {}, ...children) {
  return build(document.createElement(tag), props, children);
}

/** Like `el`, for SVG elements. */
export function svg(tag, props = {}, ...children) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), props, children);
}

function build(node, props, children) {
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.setAttribute("class", value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** "just now", "12 s ago", "3 min ago", "2 h ago", "4 d ago" for an RFC 3339 time. */
export function ago(time, now = Date.now()) {
  const then = Date.parse(time);
  if (Number.isNaN(then)) return "";
  const s = Math.max(0, Math.round((now - then) / 1000));
  if (s < 2) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A `<time>` showing how long ago `time` was, kept up to date by the page's clock. */
export function since(time) {
  return el("time", { datetime: time, class: "ago", title: time, text: ago(time) });
}

// One clock for every relative time on the page.
setInterval(() => {
  const now = Date.now();
  for (const node of document.querySelectorAll("time.ago")) {
    node.textContent = ago(node.getAttribute("datetime"), now);
  }
}, 1000);

/** The visitor's user, or "guest". */
export function who(visitor) {
  const user = visitor.user;
  return user === null || user === undefined || user === "" ? "guest" : String(user);
}

/** Fills every `[data-count=visitors|registered|guests]` on the page. */
export function showCounts(active) {
  if (!active) return;
  for (const node of document.querySelectorAll("[data-count]")) {
    const value = active[node.dataset.count];
    if (value !== undefined) node.textContent = String(value);
  }
}

/**
 * The counts from `GET /v1/active`. That route belongs to the hook's group, which an agent may
 * keep to the hook token; then the counts are worked out from `visitors`, every active visitor
 * (the same records `/v1/active` counts). The feed's events carry the counts from then on.
 */
export async function loadCounts(visitors) {
  try {
    return await api("/v1/active", { login: false });
  } catch {
    const registered = visitors.filter((v) => who(v) !== "guest").length;
    return { visitors: visitors.length, registered, guests: visitors.length - registered };
  }
}

/** Calls `fn` once, `ms` after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Shows the feed's state in the header's `.feed-status`. */
function feedStatus(state, text) {
  for (const node of document.querySelectorAll(".feed-status")) {
    node.classList.toggle("live", state === "live");
    node.classList.toggle("down", state === "down");
    node.textContent = text;
  }
}

/**
 * Follows `GET /v1/feed` (server-sent events). `onVisit({visitor, active})`,
 * `onLeft({key, active})`, and `onOpen()` each time the stream (re)opens: events sent while
 * it was down are lost, so a page reloads its state then.
 *
 * The browser retries a dropped stream by itself; when it gives up (an error answer, the agent
 * restarting), a new stream is opened after a pause that grows up to 15 s.
 */
export function follow({ onVisit, onLeft, onOpen }) {
  let source = null;
  let pause = 1000;

  const connect = () => {
    source = new EventSource("/v1/feed");
    source.addEventListener("open", () => {
      pause = 1000;
      feedStatus("live", "live");
      if (onOpen) onOpen();
    });
    source.addEventListener("visit", (event) => dispatch(onVisit, event));
    source.addEventListener("left", (event) => dispatch(onLeft, event));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        feedStatus("down", "reconnecting…");
        source.close();
        // A logged-out browser gets 401 here too: the API call finds out and goes to login.
        api("/v1/visitors?active=true&limit=1").catch(() => {});
        setTimeout(connect, pause);
        pause = Math.min(pause * 2, 15000);
      } else {
        feedStatus("down", "reconnecting…");
      }
    });
  };

  feedStatus("down", "connecting…");
  connect();
  return { close: () => source && source.close() };
}

function dispatch(handler, event) {
  if (!handler) return;
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  handler(data);
}

/** Marks the current page's link in the navigation. */
for (const link of document.querySelectorAll(".top nav a")) {
  if (link.getAttribute("href") === window.location.pathname) {
    link.setAttribute("aria-current", "page");
  }
}
