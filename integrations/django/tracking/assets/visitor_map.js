// The visitor map: redraws the markers and the list from the map data every few seconds.
// Text only, never HTML: whatever the data holds is shown as text.
(function () {
  "use strict";
  const root = document.getElementById("tracking-map");
  if (!root) return;
  const SVG = "http://www.w3.org/2000/svg";
  const markers = root.querySelector(".tracking-markers");
  const tbody = root.querySelector(".tracking-list tbody");
  const summary = root.querySelector(".tracking-summary");
  const notice = root.querySelector(".tracking-notice");

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function draw(data) {
    const nodes = data.places.map((p) => {
      const c = document.createElementNS(SVG, "circle");
      c.setAttribute("class", "marker");
      c.setAttribute("cx", p.x);
      c.setAttribute("cy", p.y);
      c.setAttribute("r", p.r);
      c.dataset.count = p.count;
      const title = document.createElementNS(SVG, "title");
      title.textContent = p.title;
      c.append(title);
      return c;
    });
    markers.replaceChildren(...nodes);
    const rows = data.visitors.map((v) => {
      const tr = document.createElement("tr");
      tr.append(cell(v.place), cell(v.last_page), cell(v.ip, "addr"), cell(v.user || "guest"), cell(v.last_update));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = cell("Nobody is on the site right now.");
      td.colSpan = 5;
      tr.append(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
    const n = data.visitors.length;
    summary.textContent = `${n} active visitor${n === 1 ? "" : "s"}${data.geoip ? " · " + data.geoip : ""}`;
    notice.hidden = Boolean(data.geoip);
  }

  async function refresh() {
    try {
      const response = await fetch(root.dataset.url, { credentials: "same-origin", cache: "no-store" });
      const data = await response.json();
      if (response.ok) draw(data);
      else summary.textContent = `Cannot load the map: ${data.error || response.status}`;
    } catch (error) {
      summary.textContent = `Cannot load the map: ${error.message}`;
    }
  }

  setInterval(refresh, 1000 * Number(root.dataset.refresh || 5));
})();
