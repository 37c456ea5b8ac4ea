// The admin page: bans, allowlist and user-agent rules, each a table with remove buttons and a
// form to add more, over the JSON API. Errors show the API's own message (and its details, one
// line per offending network), so "needs force" reads the same as on the command line.

import { api, el, since } from "/assets/common.js";

/** Words of a list typed by hand: separated by spaces, commas or new lines. */
function words(text) {
  return text
    .split(/[\s,]+/)
    .map((w) => w.trim())
    .filter((w) => w);
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * Seconds in "90", "30m", "12h", "7d", "1h30m"; null for "", "forever" or "never".
 * Throws on anything else.
 */
export function parseTtl(text) {
  const t = text.trim().toLowerCase();
  if (t === "" || t === "forever" || t === "never") return null;
  if (/^\d+$/.test(t)) return Number(t);
  const parts = [...t.matchAll(/(\d+)\s*([smhdw])/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("").replace(/\s/g, "") !== t.replace(/\s/g, "")) {
    throw new Error(`"${text}" is not a duration like 30m, 12h or 7d`);
  }
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * UNITS[unit], 0);
}

/** "in 45 s", "in 12 min", "in 1 h 59 min", "in 6 d 23 h", "never". */
function expiresIn(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const two = (big, bigUnit, small, smallUnit) => (small ? `in ${big} ${bigUnit} ${small} ${smallUnit}` : `in ${big} ${bigUnit}`);
  if (seconds < 60) return `in ${seconds} s`;
  if (seconds < 3600) return `in ${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return two(Math.floor(seconds / 3600), "h", Math.floor((seconds % 3600) / 60), "min");
  return two(Math.floor(seconds / 86400), "d", Math.floor((seconds % 86400) / 3600), "h");
}

/** Shows an outcome under a form: `kind` is "ok", "note" or "error". */
function say(box, kind, text, lines = []) {
  box.className = `message ${kind}`;
  box.replaceChildren(text, ...(lines.length ? [el("ul", {}, ...lines.map((line) => el("li", { text: line })))] : []));
}

/**
 * One section: `list` (GET path), `row(item)` (cells), `remove(item)` (the POST /remove body),
 * `add(form)` (the POST body from the form), `done(reply)` (what to say after adding).
 * `fetch()` (optional) reads the items to show, for a list too long to read whole.
 */
function section({ id, list, columns, remove, add, done, fetch = () => api(list) }) {
  const root = document.getElementById(id);
  const tbody = root.querySelector("tbody");
  const form = root.querySelector("form.add");
  const box = root.querySelector(".message");

  async function load() {
    try {
      const items = await fetch();
      tbody.replaceChildren(
        ...items.map((item) => {
          const button = el("button", { type: "button", class: "small", text: "Remove" });
          button.addEventListener("click", async () => {
            button.disabled = true;
            try {
              await api(`${list}/remove`, { method: "POST", body: remove(item) });
              say(box, "ok", "Removed.");
            } catch (error) {
              say(box, "error", error.message, error.details);
            }
            load();
          });
          return el("tr", {}, ...columns(item), el("td", {}, button));
        }),
      );
      if (items.length === 0) {
        tbody.append(el("tr", {}, el("td", { colspan: "8", class: "empty", text: "None." })));
      }
    } catch (error) {
      say(box, "error", `Cannot load the list: ${error.message}`, error.details);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const reply = await api(list, { method: "POST", body: add(form) });
      const [text, lines] = done(reply);
      say(box, lines.length ? "note" : "ok", text, lines);
      form.reset();
    } catch (error) {
      if (error.status === 409 && form.elements.force) {
        const message = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
        say(box, "error", `${message} Tick “force” and try again to do it anyway.`, error.details);
        form.elements.force.focus();
      } else {
        say(box, "error", error.message, error.details);
      }
    } finally {
      button.disabled = false;
    }
    load();
  });

  load();
  return { load };
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

/** Records a page of the ban table shows. */
const BAN_PAGE = 100;

/**
 * The bans, a page at a time, filtered on the server: a store may hold millions. `cursors`
 * holds where each page seen so far starts, so that "Previous" goes back without counting.
 */
const banPages = {
  search: document.getElementById("search-bans"),
  info: document.querySelector("#bans .page-info"),
  cursors: [null],
  next: null,
  filters() {
    const query = new URLSearchParams({ limit: String(BAN_PAGE) });
    for (const name of ["q", "contains", "source"]) {
      const value = this.search.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    return query;
  },
  async fetch() {
    const query = this.filters();
    const after = this.cursors[this.cursors.length - 1];
    if (after) query.set("after", after);
    const page = await api(`/v1/bans?${query}`);
    this.next = page.next;
    const first = (this.cursors.length - 1) * BAN_PAGE;
    this.info.textContent = page.bans.length
      ? `${(first + 1).toLocaleString()}–${(first + page.bans.length).toLocaleString()} of ${page.total.toLocaleString()}`
      : `0 of ${page.total.toLocaleString()}`;
    document.querySelector('#bans [data-page="next"]').disabled = !page.next;
    document.querySelector('#bans [data-page="previous"]').disabled = this.cursors.length < 2;
    document.querySelector('#bans [data-page="first"]').disabled = this.cursors.length < 2;
    return page.bans;
  },
};

const bans = section({
  id: "bans",
  list: "/v1/bans",
  fetch: () => banPages.fetch(),
  columns: (ban) => [
    el("td", { class: "code", text: ban.network }),
    el("td", { class: "clip", title: ban.reason, text: ban.reason || "–" }),
    el("td", { text: ban.source }),
    el("td", { title: ban.expires || null, text: expiresIn(ban.expires_in_secs) }),
    el("td", { class: "num", text: String(ban.hits) }),
    el("td", { text: ban.enforced ? "yes" : "not yet" }),
  ],
  remove: (ban) => ({ networks: [ban.network], source: ban.source }),
  add: (form) => {
    const body = {
      networks: words(form.elements.networks.value),
      reason: form.elements.reason.value.trim(),
      // Bans made here are told apart from the CLI's and the synced lists' in `ban ls`.
      source: "web",
      force: form.elements.force.checked,
    };
    const ttl = parseTtl(form.elements.ttl.value);
    if (ttl !== null) body.ttl_secs = ttl;
    return body;
  },
  done: (reply) => [`Banned ${plural(reply.bans.length, "network", "networks")}.`, reply.warnings || []],
});

section({
  id: "allow",
  list: "/v1/allow",
  columns: (entry) => [
    el("td", { class: "code", text: entry.network }),
    el("td", { class: "clip", title: entry.note, text: entry.note || "–" }),
    el("td", {}, since(entry.created)),
  ],
  remove: (entry) => ({ networks: [entry.network] }),
  add: (form) => ({ networks: words(form.elements.networks.value), note: form.elements.note.value.trim() }),
  done: (reply) => [`Allowed ${plural((reply.added || []).length, "network", "networks")}.`, reply.warnings || []],
});

section({
  id: "ua",
  list: "/v1/ua",
  columns: (rule) => [
    el("td", { class: "code", text: rule.keyword }),
    el("td", { class: "clip", title: rule.note || "", text: rule.note || "–" }),
    el("td", {}, rule.created ? since(rule.created) : "–"),
  ],
  remove: (rule) => ({ keywords: [rule.keyword] }),
  add: (form) => ({ keywords: words(form.elements.keywords.value), note: form.elements.note.value.trim() }),
  done: (reply) => {
    const rules = Array.isArray(reply) ? reply : reply?.added;
    const text = Array.isArray(rules) ? `Added ${plural(rules.length, "rule", "rules")}.` : "Added.";
    return [text, reply?.warnings || []];
  },
});

banPages.search.addEventListener("submit", (event) => {
  event.preventDefault();
  banPages.cursors = [null];
  bans.load();
});
for (const button of document.querySelectorAll("#bans .pager button")) {
  button.addEventListener("click", () => {
    const to = button.dataset.page;
    if (to === "next" && banPages.next) banPages.cursors.push(banPages.next);
    if (to === "previous" && banPages.cursors.length > 1) banPages.cursors.pop();
    if (to === "first") banPages.cursors = [null];
    bans.load();
  });
}
