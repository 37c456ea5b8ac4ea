// The live page: every active visitor in a table, most recent first, kept up to date from the
// feed without reloading: a `visit` event adds or updates a row, a `left` event removes it, and
// each event carries the counts.

import { api, el, follow, loadCounts, showCounts, since, who } from "/assets/common.js";

const tbody = document.querySelector("#visitors tbody");
const problem = document.getElementById("live-error");
/** Active visitors by key, as the API last described them. */
const visitors = new Map();
/** Counts the feed's events, so that a load that raced with one can tell and start over. */
let events = 0;

function row(visitor, fresh) {
  const referrer = visitor.referrer || "";
  return el(
    "tr",
    { dataset: { key: visitor.key }, class: fresh ? "fresh" : null, title: visitor.user_agent || null },
    el("td", { class: "addr", text: visitor.ip }),
    el("td", { class: who(visitor) === "guest" ? "guest" : null, text: who(visitor) }),
    el("td", { class: "clip", title: visitor.last_page, text: visitor.last_page }),
    el("td", { class: "num", text: String(visitor.page_views ?? "") }),
    el("td", { class: "clip", title: referrer || null, text: referrer || "–" }),
    el("td", {}, since(visitor.last_update)),
  );
}

function showEmpty() {
  if (visitors.size === 0) {
    tbody.replaceChildren(el("tr", { class: "none" }, el("td", { colspan: "6", class: "empty", text: "Nobody is on the site right now." })));
  }
}

function rowOf(key) {
  return [...tbody.querySelectorAll("tr[data-key]")].find((tr) => tr.dataset.key === key);
}

/** Loads every active visitor and the counts; on start and whenever the feed reconnects. */
async function load(tries = 3) {
  try {
    const seen = events;
    const list = await api("/v1/visitors?active=true&limit=10000");
    // An event that came while the list was on its way may be newer than the list.
    if (events !== seen && tries > 1) return load(tries - 1);
    visitors.clear();
    for (const visitor of list) visitors.set(visitor.key, visitor);
    tbody.replaceChildren(...list.map((visitor) => row(visitor, false)));
    showEmpty();
    showCounts(await loadCounts(list));
    problem.textContent = "";
  } catch (error) {
    problem.textContent = `Cannot load the visitors: ${error.message}`;
  }
}

follow({
  onOpen: load,
  onVisit: ({ visitor, active }) => {
    events += 1;
    if (!visitor) return;
    visitors.set(visitor.key, visitor);
    const old = rowOf(visitor.key);
    if (old) old.remove();
    const none = tbody.querySelector("tr.none, tr.loading");
    if (none) none.remove();
    tbody.prepend(row(visitor, true));
    showCounts(active);
  },
  onLeft: ({ key, active }) => {
    events += 1;
    visitors.delete(key);
    const old = rowOf(key);
    if (old) old.remove();
    showEmpty();
    showCounts(active);
  },
});
load();
