// The live list: active visitors and the counts, reloaded every couple of seconds.
// Text only, never HTML: whatever the data holds is shown as text.
(function () {
  "use strict";
  const root = document.getElementById("tracking-live");
  if (!root) return;
  const tbody = root.querySelector(".tracking-list tbody");

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function draw(data) {
    for (const node of root.querySelectorAll("[data-count]")) {
      const value = data.counts[node.dataset.count];
      if (value !== undefined) node.textContent = String(value);
    }
    const rows = data.visitors.map((v) => {
      const tr = document.createElement("tr");
      tr.dataset.key = v.key;
      tr.append(cell(v.ip, "addr"), cell(v.user || "guest"), cell(v.last_page), cell(String(v.page_views), "num"),
        cell(v.referrer || "–"), cell(v.last_update));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = cell("Nobody is on the site right now.");
      td.colSpan = 6;
      tr.append(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  async function refresh() {
    try {
      const response = await fetch(root.dataset.url, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) draw(await response.json());
    } catch (error) {
      // The next round tries again.
    }
  }

  setInterval(refresh, 1000 * Number(root.dataset.refresh || 2));
})();
