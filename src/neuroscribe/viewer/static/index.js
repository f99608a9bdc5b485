// neuroscribe viewer: the index of units. All text goes into the DOM through textContent.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const PAGE_SIZE = 100;
  const units = data.units;      // [layer, index, kind, max_activation, href]
  const rows = data.rows;        // [unit, method, score, top_only, random_only, status, explanation]
  const methods = data.methods;
  // A method's headline is named wherever it is not the simulation's correlation, so a detection score
  // is never read as a correlation.
  const methodLabels = methods.map((m, i) => {
    const headline = data.headlines[i];
    return headline && headline !== "ev_correlation" ? `${m} \u00b7 ${headline}` : m;
  });
  const tbody = document.querySelector("#units tbody");
  const count = document.getElementById("count");
  const pageLabel = document.getElementById("page");
  let view = rows.map((_, i) => i);
  let page = 0;
  let sortKey = null;
  let sortDir = 1;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }
  function fmt(x) { return x === null || x === undefined ? "\u2013" : x.toFixed(3); }
  // In a scored row a missing value is a score the file leaves undefined; a failed row has none at all.
  function scoreText(x, status) { return x === null && status === "ok" ? "n/a" : fmt(x); }

  const notes = document.getElementById("notes");
  for (const note of data.notes) notes.appendChild(el("p", note, "note"));
  function fillMeta(dl, pairs) {
    for (const [key, value] of pairs) { dl.appendChild(el("dt", key)); dl.appendChild(el("dd", value)); }
  }
  fillMeta(document.getElementById("meta"), data.meta);
  if (data.provenance.length) {  // versions, platform, shards: there when needed, folded otherwise
    const more = el("details");
    more.appendChild(el("summary", "provenance"));
    const dl = el("dl", null, "meta");
    fillMeta(dl, data.provenance);
    more.appendChild(dl);
    document.getElementById("about").appendChild(more);
  }
  if (!methods.length) document.body.classList.add("no-methods");  // records only: no scores to show
  const methodSelect = document.getElementById("f-method");
  methods.forEach((m, i) => { const o = el("option", methodLabels[i]); o.value = String(i); methodSelect.appendChild(o); });
  const scoreHead = document.querySelector("#units th[data-key=score]");
  [scoreHead.textContent, scoreHead.title] = data.score_heading;

  // One small histogram per method of its top-and-random scores, 20 bins over [-1, 1].
  function histograms() {
    const BINS = 20, W = 260, H = 70, SVG = "http://www.w3.org/2000/svg";
    const counts = methods.map(() => new Array(BINS).fill(0));
    const scored = methods.map(() => []);
    for (const r of rows) {
      if (r[1] === null || r[2] === null) continue;
      scored[r[1]].push(r[2]);
      counts[r[1]][Math.min(BINS - 1, Math.max(0, Math.floor((r[2] + 1) / 2 * BINS)))]++;
    }
    const box = document.querySelector("#distributions .histograms");
    methods.forEach((_, m) => {
      const figure = el("figure");
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", `0 0 ${W} ${H + 12}`);
      svg.setAttribute("width", String(W));
      svg.setAttribute("height", String(H + 12));
      const top = Math.max(1, ...counts[m]);
      counts[m].forEach((n, b) => {
        const bar = document.createElementNS(SVG, "rect");
        const h = n / top * H;
        bar.setAttribute("x", String(b * W / BINS + 0.5));
        bar.setAttribute("y", String(H - h));
        bar.setAttribute("width", String(W / BINS - 1));
        bar.setAttribute("height", String(h));
        bar.setAttribute("class", "bar");
        const tip = document.createElementNS(SVG, "title");
        tip.textContent = `${n} units scored in [${(b * 2 / BINS - 1).toFixed(1)}, ${((b + 1) * 2 / BINS - 1).toFixed(1)})`;
        bar.appendChild(tip);
        svg.appendChild(bar);
      });
      for (const [x, label] of [[0, "-1"], [W / 2, "0"], [W, "1"]]) {
        const text = document.createElementNS(SVG, "text");
        text.setAttribute("x", String(x));
        text.setAttribute("y", String(H + 11));
        text.setAttribute("text-anchor", x === 0 ? "start" : x === W ? "end" : "middle");
        text.textContent = label;
        svg.appendChild(text);
      }
      figure.appendChild(svg);
      const values = scored[m];
      const mean = values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
      figure.appendChild(el("figcaption", `${methodLabels[m]}: mean ${fmt(mean)}, ${values.length} scored`));
      box.appendChild(figure);
    });
    if (methods.length) document.getElementById("distributions").hidden = false;
  }
  histograms();

  const getters = {
    layer: (r) => units[r[0]][0], index: (r) => units[r[0]][1], method: (r) => methods[r[1]] || "",
    score: (r) => r[2], top_only: (r) => r[3], random_only: (r) => r[4], max_activation: (r) => units[r[0]][3],
  };

  function parseLayers(text) {
    text = text.trim();
    if (!text) return null;
    const wanted = new Set();
    for (const part of text.split(",")) {
      const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(part);
      if (!m) throw new Error("layer filter: use numbers, ranges and commas, e.g. 3-7,9");
      const lo = Number(m[1]), hi = m[2] === undefined ? lo : Number(m[2]);
      for (let l = lo; l <= hi; l++) wanted.add(l);
    }
    return wanted;
  }

  function applyFilters() {
    let layers;
    try { layers = parseLayers(document.getElementById("f-layer").value); }
    catch (e) { count.textContent = e.message; return; }
    const method = methodSelect.value === "" ? null : Number(methodSelect.value);
    const minText = document.getElementById("f-min").value;
    const min = minText === "" ? null : Number(minText);
    const needle = document.getElementById("f-text").value.toLowerCase();
    view = [];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (layers && !layers.has(units[r[0]][0])) continue;
      if (method !== null && r[1] !== method) continue;
      if (min !== null && !(r[2] !== null && r[2] >= min)) continue;
      if (needle && !(r[6] || "").toLowerCase().includes(needle)) continue;
      view.push(i);
    }
    sortView();
    page = 0;
    render();
  }

  function sortView() {
    if (sortKey === null) return;
    const get = getters[sortKey];
    view.sort((a, b) => {
      const x = get(rows[a]), y = get(rows[b]);
      if (x === y) return a - b;
      if (x === null) return 1;   // missing values last in either direction
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
  }

  function render() {
    const pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    const frag = document.createDocumentFragment();
    for (const i of view.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)) {
      const r = rows[i], u = units[r[0]];
      const tr = document.createElement("tr");
      const layerCell = el("td", null, "num");
      const link = el("a", u[5] ? u[5] + ":" + u[0] : String(u[0]));  // u[5]: the autoencoder of several
      link.href = u[4];
      layerCell.appendChild(link);
      tr.appendChild(layerCell);
      const indexCell = el("td", null, "num");
      const link2 = el("a", String(u[1]));
      link2.href = u[4];
      indexCell.appendChild(link2);
      tr.appendChild(indexCell);
      tr.appendChild(el("td", r[1] === null ? "\u2013" : methodLabels[r[1]], "m"));
      for (const value of [r[2], r[3], r[4]]) tr.appendChild(el("td", scoreText(value, r[5]), "num m"));
      tr.appendChild(el("td", fmt(u[3]), "num"));
      const text = r[5] === "failed" ? "failed: " + (r[6] || "") : (r[6] || "");
      tr.appendChild(el("td", text, r[5] === "failed" ? "m explanation status-failed" : "m explanation"));
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    count.textContent = view.length + " of " + rows.length + " rows";
    pageLabel.textContent = "page " + (page + 1) + " of " + pages;
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page >= pages - 1;
  }

  for (const th of document.querySelectorAll("th.sortable")) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      sortDir = sortKey === key ? -sortDir : (key === "layer" || key === "index" || key === "method" ? 1 : -1);
      sortKey = key;
      for (const other of document.querySelectorAll("th.sortable")) other.classList.remove("sorted-asc", "sorted-desc");
      th.classList.add(sortDir === 1 ? "sorted-asc" : "sorted-desc");
      sortView();
      page = 0;
      render();
    });
  }
  for (const id of ["f-layer", "f-method", "f-min", "f-text"]) {
    document.getElementById(id).addEventListener("input", applyFilters);
  }
  document.getElementById("prev").addEventListener("click", () => { page--; render(); });
  document.getElementById("next").addEventListener("click", () => { page++; render(); });
  render();
  performance.mark("viewer-ready");
  document.body.dataset.ready = "true";
})();
