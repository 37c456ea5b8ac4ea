// The dashboard: counts, busiest pages, the last 20 events of the feed and a small map, all
// following one feed.

import { api, debounce, el, follow, loadCounts, showCounts, since, who } from "/assets/common.js";
import { MapView } from "/assets/map.js";

/** How many events the feed list keeps. */
const FEED_LENGTH = 20;

const pages = document.querySelector("#pages tbody");
const feed = document.getElementById("feed");
const map = new MapView(document.getElementById("map"));
/** The last visitor record seen for each key, so that a `left` event can say who left. */
const known = new Map();

async function loadPages() {
  try {
    const busiest = await api("/v1/active/pages?limit=10");
    pages.replaceChildren(
      ...busiest.map((page) =>
        el(
          "tr",
          {},
          el("td", { class: "clip", title: page.path, text: page.path }),
          el("td", { class: "num", text: String(page.visitors) }),
          el("td", { class: "num", text: String(page.registered) }),
        ),
      ),
    );
    if (busiest.length === 0) {
      pages.replaceChildren(el("tr", {}, el("td", { colspan: "3", class: "empty", text: "No active visitors." })));
    }
  } catch (error) {
    pages.replaceChildren(el("tr", {}, el("td", { colspan: "3", class: "empty", text: error.message })));
  }
}
const loadPagesSoon = debounce(loadPages, 400);

/** Adds one line at the top of the feed list and drops the oldest past FEED_LENGTH. */
function addLine(kind, time, ...parts) {
  const empty = feed.querySelector("li.empty");
  if (empty) empty.remove();
  feed.prepend(el("li", { class: kind }, el("span", { class: "when" }, since(time)), ...parts));
  while (feed.children.length > FEED_LENGTH) feed.lastElementChild.remove();
}

function visitLine(visitor) {
  addLine("visit", visitor.last_update, `${visitor.ip} (${who(visitor)}) on `, el("code", { text: visitor.last_page }));
}

/** Loads counts, pages, map, and seeds the feed with the most recent active visitors. */
async function load() {
  let active = [];
  try {
    active = await api("/v1/visitors?active=true&limit=10000");
  } catch {
    active = [];
  }
  known.clear();
  for (const visitor of active) known.set(visitor.key, visitor);
  feed.replaceChildren();
  for (const visitor of active.slice(0, FEED_LENGTH).reverse()) visitLine(visitor);
  if (active.length === 0) feed.append(el("li", { class: "empty", text: "Waiting for visits…" }));
  showCounts(await loadCounts(active));
  loadPages();
  map.refresh();
}

/** How often the fleet's table is read again. */
const FLEET_EVERY_MS = 5000;

/**
 * The fleet, when this agent shares a PostgreSQL store: every host, and what is wrong with it
 * (lagging, full, silent), as `tracking fleet` shows it. Hidden without a fleet.
 */
async function loadFleet() {
  const section = document.getElementById("fleet");
  let status;
  let hosts;
  try {
    [status, hosts] = await Promise.all([api("/v1/status"), api("/v1/fleet")]);
  } catch (error) {
    section.querySelector(".fleet-summary").textContent = `Cannot read the fleet: ${error.message}`;
    return;
  }
  if (!status.fleet) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  const me = status.fleet;
  const leftOut = status.bans_v4.left_out + status.bans_v6.left_out;
  const parts = [`This host applied ${me.applied} of ${me.head} changes`];
  if (me.behind) parts.push(`${me.behind} behind`);
  if (!me.listening) parts.push("not hearing the fleet (catching up on its heartbeat)");
  if (leftOut) parts.push(`its tables cannot hold ${leftOut} of the store's bans: the widest networks are enforced first`);
  if (me.last_error) parts.push(`last error: ${me.last_error}`);
  section.querySelector(".fleet-summary").textContent = `${parts.join("; ")}.`;
  section.querySelector("tbody").replaceChildren(
    ...hosts.map((h) => {
      const state = [];
      if (h.silent) state.push("silent");
      if (h.lagging) state.push(h.listening ? `lagging ${h.lag}` : "deaf");
      if (h.full) state.push(`full (${h.left_out} not enforced)`);
      if (h.last_error) state.push(`error: ${h.last_error}`);
      return el(
        "tr",
        { class: state.length ? "problem" : "" },
        el("td", { text: h.this ? `${h.host} (this one)` : h.host }),
        el("td", { text: h.interfaces.join(", ") }),
        el("td", {}, since(h.heartbeat)),
        el("td", { class: "num", text: String(h.applied) }),
        el("td", { class: "num", text: String(h.lag) }),
        el("td", { class: "num", text: `${h.bans_enforced.toLocaleString()} / ${(h.capacity_v4 + h.capacity_v6).toLocaleString()}` }),
        el("td", { text: state.length ? state.join(", ") : "ok" }),
      );
    }),
  );
}

follow({
  onOpen: load,
  onVisit: ({ visitor, active }) => {
    if (!visitor) return;
    known.set(visitor.key, visitor);
    visitLine(visitor);
    showCounts(active);
    loadPagesSoon();
    map.refreshSoon();
  },
  onLeft: ({ key, active }) => {
    const visitor = known.get(key);
    known.delete(key);
    addLine("left", new Date().toISOString(), `${visitor ? `${visitor.ip} (${who(visitor)})` : "a visitor"} left`);
    showCounts(active);
    loadPagesSoon();
    map.refreshSoon();
  },
});
load();
loadFleet();
setInterval(loadFleet, FLEET_EVERY_MS);
