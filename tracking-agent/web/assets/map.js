// The map of active visitors, shared by the map page and the dashboard: the world outline
// (world.svg, equirectangular) with an SVG of markers on top using the same 1000 x 500 view
// box, so a place's position is plain arithmetic, and a list of who is where.

import { api, debounce, el, since, svg, who } from "/assets/common.js";

const W = 1000;
const H = 500;

/** Where (lon, lat) falls on the map: the equirectangular projection. */
export function project(longitude, latitude) {
  return [((longitude + 180) / 360) * W, ((90 - latitude) / 180) * H];
}

/** "London, United Kingdom"; the country alone when the city is unknown. */
export function placeName(location) {
  if (!location) return "unknown";
  const parts = [location.city, location.country].filter((p) => p);
  return parts.length ? parts.join(", ") : `${location.latitude}, ${location.longitude}`;
}

/** Visitors at (about) the same place share one marker: within a tenth of a degree. */
function placeKey(location) {
  return `${location.latitude.toFixed(1)},${location.longitude.toFixed(1)}`;
}

/**
 * A live map in `root`, which holds (all optional but the map itself):
 * `.world` (the map), `.map-notice`, `.map-summary`, `.map-attribution` (the credit the
 * data's licence asks for, e.g. DB-IP's) and `table.map-list tbody`.
 * `refresh()` loads `GET /v1/map`; `refreshSoon()` does so once after a burst of events.
 */
export class MapView {
  constructor(root) {
    this.root = root;
    this.world = root.querySelector(".world");
    this.notice = root.querySelector(".map-notice");
    this.summary = root.querySelector(".map-summary");
    this.attribution = root.querySelector(".map-attribution");
    this.list = root.querySelector("table.map-list tbody");
    this.selected = null;
    this.world.replaceChildren(
      el("img", { src: "/assets/world.svg", alt: "World map", draggable: "false" }),
      (this.markers = svg("svg", {
        class: "markers",
        viewBox: `0 0 ${W} ${H}`,
        role: "img",
        "aria-label": "Active visitors on the world map",
      })),
    );
    this.refreshSoon = debounce(() => this.refresh(), 400);
  }

  async refresh() {
    try {
      this.show(await api("/v1/map"));
    } catch (error) {
      if (this.summary) this.summary.textContent = `Cannot load the map: ${error.message}`;
    }
  }

  /** Draws the answer of `GET /v1/map`. */
  show(data) {
    const visitors = (data && data.visitors) || [];
    const located = visitors.filter((v) => v.location);
    const geoip = data ? data.geoip : null;
    this.world.classList.toggle("off", !geoip);
    this.world.dataset.geoip = geoip ? "yes" : "no";
    if (this.notice) {
      this.notice.hidden = Boolean(geoip);
      this.notice.replaceChildren(
        ...(geoip
          ? []
          : [
              el("strong", { text: "No GeoIP database" }),
              ": start the agent with ",
              el("code", { text: "--geoip-db /path/to/GeoLite2-City.mmdb" }),
              " to see where visitors are. Active visitors are listed below.",
            ]),
      );
    }
    if (this.summary) {
      const what = `${located.length} of ${visitors.length} active visitor${visitors.length === 1 ? "" : "s"} located`;
      this.summary.textContent = geoip ? `${what} · ${geoip}` : `${visitors.length} active visitor${visitors.length === 1 ? "" : "s"}`;
    }
    this.drawCredit(data ? data.attribution : null);
    this.drawMarkers(located);
    this.drawList(visitors);
  }

  /** The data's credit, `{text, url}` from the agent, as a link; nothing without one. */
  drawCredit(attribution) {
    if (!this.attribution) return;
    this.attribution.hidden = !attribution;
    this.attribution.replaceChildren(
      ...(attribution ? [el("a", { href: attribution.url, rel: "noopener", text: attribution.text })] : []),
    );
  }

  drawMarkers(located) {
    const places = new Map();
    for (const visitor of located) {
      const key = placeKey(visitor.location);
      if (!places.has(key)) places.set(key, { location: visitor.location, visitors: [] });
      places.get(key).visitors.push(visitor);
    }
    const nodes = [];
    for (const [key, place] of places) {
      const [x, y] = project(place.location.longitude, place.location.latitude);
      const n = place.visitors.length;
      const r = Math.min(5 + 2.5 * Math.sqrt(n - 1), 16);
      const pages = place.visitors.map((v) => `${who(v)} on ${v.last_page}`).join("\n");
      const circle = svg(
        "circle",
        {
          class: key === this.selected ? "marker selected" : "marker",
          cx: x.toFixed(1),
          cy: y.toFixed(1),
          r: r.toFixed(1),
          tabindex: "0",
          dataset: { place: key, city: place.location.city || "", country: place.location.country || "" },
        },
        svg("title", { text: `${placeName(place.location)} (${n})\n${pages}` }),
      );
      circle.addEventListener("click", () => this.select(key));
      nodes.push(circle);
      if (n > 1) {
        nodes.push(svg("text", { class: "marker-count", x: x.toFixed(1), y: y.toFixed(1), text: String(n) }));
      }
    }
    this.markers.replaceChildren(...nodes);
  }

  drawList(visitors) {
    if (!this.list) return;
    const sorted = [...visitors].sort((a, b) => Date.parse(b.last_update) - Date.parse(a.last_update));
    if (sorted.length === 0) {
      this.list.replaceChildren(
        el("tr", {}, el("td", { colspan: "5", class: "empty", text: "Nobody is on the site right now." })),
      );
      return;
    }
    this.list.replaceChildren(
      ...sorted.map((v) => {
        const key = v.location ? placeKey(v.location) : null;
        const row = el(
          "tr",
          { dataset: { key: v.key, place: key || "" }, class: key && key === this.selected ? "selected" : null },
          el("td", { class: "place", text: placeName(v.location) }),
          el("td", { class: "clip", title: v.last_page, text: v.last_page }),
          el("td", { class: "addr", text: v.ip }),
          el("td", { class: who(v) === "guest" ? "guest" : null, text: who(v) }),
          el("td", {}, since(v.last_update)),
        );
        if (key) row.addEventListener("click", () => this.select(key));
        return row;
      }),
    );
  }

  /** Highlights one place on the map and its visitors in the list (again: none). */
  select(key) {
    this.selected = this.selected === key ? null : key;
    for (const node of this.root.querySelectorAll("[data-place]")) {
      node.classList.toggle("selected", node.dataset.place === this.selected && this.selected !== null);
    }
  }
}
