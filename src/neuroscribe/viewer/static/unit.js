// neuroscribe viewer: one unit's page. All text goes into the DOM through textContent.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const root = document.getElementById("unit");
  const tip = document.getElementById("tip");
  const tipInfo = new WeakMap();   // token element -> function giving the lines shown in the tooltip
  let pinned = null;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }
  function fmt(x, digits) {
    return x === null || x === undefined ? "\u2013" : x.toFixed(digits === undefined ? 3 : digits);
  }
  // A score the file leaves undefined (constant truth or prediction) is "n/a", never a number.
  function score(x) { return x === null || x === undefined ? "n/a" : fmt(x); }
  function panel(title) {
    const section = el("section", null, "panel");
    section.appendChild(el("h2", title));
    root.appendChild(section);
    return section;
  }

  // Whitespace and control characters get a visible stand-in; everything else (RTL, emoji) is kept as is.
  const VISIBLE = { " ": "\u00b7", "\t": "\u2192", "\n": "\u21b5", "\r": "\u240d", "\u00a0": "\u2423" };
  function tokenContent(token) {
    const frag = document.createDocumentFragment();
    let plain = "";
    const flush = () => { if (plain) { frag.appendChild(document.createTextNode(plain)); plain = ""; } };
    for (const ch of token) {
      const code = ch.codePointAt(0);
      let stand = VISIBLE[ch];
      if (stand === undefined && (code < 32 || code === 127)) stand = String.fromCodePoint(code === 127 ? 0x2421 : 0x2400 + code);
      if (stand === undefined) { plain += ch; continue; }
      flush();
      frag.appendChild(el("span", stand, "ws"));
    }
    flush();
    if (token === "") frag.appendChild(el("span", "\u2205", "ws"));
    return frag;
  }

  function colour(value, scale) {
    if (value === null || value === 0 || !(scale > 0)) return "transparent";
    const alpha = Math.min(1, Math.abs(value) / scale) * 0.85;
    return "rgba(var(" + (value >= 0 ? "--pos" : "--neg") + "), " + alpha.toFixed(3) + ")";
  }

  // `lines` is a function, so the tooltip text is only formatted for the tokens someone points at.
  function tokenNode(token, value, scale, lines) {
    const span = el("span", null, "tok");
    span.appendChild(tokenContent(token));
    span.style.backgroundColor = colour(value, scale);
    tipInfo.set(span, () => ["token " + JSON.stringify(token)].concat(lines()));
    return span;
  }

  function normalized(value) {
    const max = data.max_activation;
    if (value === null || !(max > 0) || !(value > 0)) return 0;
    return Math.min(10, Math.floor(10 * value / max));
  }
  function trueLines(value) {
    return ["activation " + fmt(value, 4) + "  (" + normalized(value) + "/10 of max " + fmt(data.max_activation, 4) + ")"];
  }

  // `more(i)`, when given, adds tooltip lines for token i (e.g. a scorer's per-token prediction).
  function excerptNode(tokens, activations, more) {
    const box = el("div", null, "excerpt");
    tokens.forEach((token, i) => {
      const value = activations.length ? activations[i] : null;
      const lines = () => (activations.length ? trueLines(value) : []).concat(more ? more(i) : []);
      box.appendChild(tokenNode(token, value, data.max_activation, lines));
      if (token.includes("\n")) box.appendChild(el("div", null, "break"));
    });
    return box;
  }

  // An attention head's excerpt: each token coloured by its strongest pair as the query; hovering a
  // token recolours the tokens before it by the activation of (that query, each key).
  function pairExcerptNode(tokens, pairs) {
    const box = el("div", null, "excerpt pairs");
    const at = (q, k) => pairs[q * (q + 1) / 2 + k];
    const strongest = tokens.map((_, q) => {
      let best = 0;
      for (let k = 1; k <= q; k++) if (at(q, k) > at(q, best)) best = k;
      return best;
    });
    const spans = tokens.map((token, q) => {
      const k = strongest[q], value = at(q, k);
      const span = tokenNode(token, value, data.max_activation, () => [
        "strongest pair as query: \u2190 key " + JSON.stringify(tokens[k]) + " at " + k + ": " + fmt(value, 4),
        "(hover shows this token's pairs with each earlier token)"]);
      span.dataset.query = String(q);
      box.appendChild(span);
      if (token.includes("\n")) box.appendChild(el("div", null, "break"));
      return span;
    });
    const restore = () => spans.forEach((span, q) => {
      span.style.backgroundColor = colour(at(q, strongest[q]), data.max_activation);
      span.classList.remove("query");
    });
    box.addEventListener("mouseover", (e) => {
      const node = e.target.closest(".tok");
      if (!node) return;
      const q = Number(node.dataset.query);
      spans.forEach((span, k) => {
        span.style.backgroundColor = k <= q ? colour(at(q, k), data.max_activation) : "transparent";
        span.classList.toggle("query", k === q);
      });
    });
    box.addEventListener("mouseleave", restore);
    return box;
  }

  // True and simulated activations as two aligned rows: one column per token.
  function pairedExcerptNode(seq) {
    const box = el("div", null, "excerpt paired");
    const calibrated = seq.scale === "true";
    const simScale = calibrated ? data.max_activation : 10;
    seq.tokens.forEach((token, i) => {
      const stack = el("span", null, "stack");
      const truth = seq.true[i], sim = seq.simulated[i];
      const both = () => {
        const lines = trueLines(truth).concat([
          (calibrated ? "simulated (calibrated to activation scale) " : "simulated (0-10 scale) ") + fmt(sim, 4)]);
        const dist = seq.distributions[i];
        if (dist && dist.length) {
          const parts = [];
          for (let k = 0; k < dist.length; k += 2) parts.push(fmt(dist[k], 0) + " (p " + fmt(dist[k + 1], 2) + ")");
          lines.push("simulator's likeliest values: " + parts.join(", "));
        }
        return lines;
      };
      stack.appendChild(tokenNode(token, truth, data.max_activation, both));
      const simNode = tokenNode(token, sim, simScale, both);
      simNode.classList.add("sim");
      stack.appendChild(simNode);
      box.appendChild(stack);
      if (token.includes("\n")) box.appendChild(el("div", null, "break"));
    });
    return box;
  }

  function showTip(node) {
    const lines = tipInfo.get(node);
    if (!lines) return;
    tip.textContent = lines().join("\n");
    tip.classList.add("shown");
    const box = node.getBoundingClientRect();
    const top = box.bottom + 6 + tip.offsetHeight > window.innerHeight ? box.top - tip.offsetHeight - 6 : box.bottom + 6;
    tip.style.left = Math.max(4, Math.min(box.left, window.innerWidth - tip.offsetWidth - 4)) + "px";
    tip.style.top = Math.max(4, top) + "px";
  }
  function hideTip() { tip.classList.remove("shown"); }
  root.addEventListener("mouseover", (e) => {
    const node = e.target.closest(".tok");
    if (node && !pinned) showTip(node);
  });
  root.addEventListener("mouseout", (e) => {
    const node = e.target.closest(".tok");
    if (node && !pinned && !node.contains(e.relatedTarget)) hideTip();
  });
  document.addEventListener("click", (e) => {
    const node = e.target.closest ? e.target.closest(".tok") : null;
    if (pinned) pinned.classList.remove("pinned");
    if (node && node !== pinned) { pinned = node; node.classList.add("pinned"); showTip(node); }
    else { pinned = null; hideTip(); }
  });
  window.addEventListener("scroll", () => { if (pinned) showTip(pinned); }, { passive: true });  // follow its token
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && pinned) { pinned.classList.remove("pinned"); pinned = null; hideTip(); }
    if (e.altKey || e.ctrlKey || e.metaKey || e.target.closest("input, select, textarea")) return;
    const target = e.key === "ArrowLeft" ? data.nav.prev : e.key === "ArrowRight" ? data.nav.next : null;
    if (target) window.location.href = target;  // walk the units with the arrow keys
  });

  // Every score the scorer computed, the headline first: its name above, one cell per variant.
  function scoreStrip(scores) {
    const strip = el("div", null, "scores");
    for (const named of scores) {
      const group = el("div", null, named.headline ? "score-group headline" : "score-group");
      group.appendChild(el("span", named.name, "name"));
      const cells = el("div", null, "variants");
      for (const [variant, value] of named.variants) {
        const cell = el("div");
        cell.appendChild(el("span", variant, "label"));
        cell.appendChild(el("span", score(value), "value"));
        cells.appendChild(cell);
      }
      group.appendChild(cells);
      strip.appendChild(group);
    }
    return strip;
  }

  // Long secondary lists start closed and are drawn when first opened, so the page is ready sooner.
  function folded(target, summary, fill) {
    const box = el("details");
    box.appendChild(el("summary", summary));
    box.addEventListener("toggle", () => { if (box.open && box.children.length === 1) fill(box); });
    target.appendChild(box);
    return box;
  }

  // A scorer's judged examples: where each came from, what was to be got right, what the model said.
  // An asked (query, key) pair of an attention head has its two tokens outlined (query) and underlined (key).
  function fillExamples(target, examples) {
    examples.forEach((ex, i) => {
      const head = [`example ${i + 1}`, ex.group, "target " + score(ex.target), "prediction " + score(ex.prediction)];
      if (ex.pair) head.splice(2, 0, `query ${ex.pair[0]} \u2190 key ${ex.pair[1]}`);
      target.appendChild(el("div", head.join(" \u00b7 "), "excerpt-head"));
      const predicted = ex.predicted.length ? (k) => ["predicted " + fmt(ex.predicted[k], 4)] : null;
      const node = excerptNode(ex.tokens, ex.true, predicted);
      if (ex.pair) {
        const spans = node.querySelectorAll(".tok");
        spans[ex.pair[0]].classList.add("query");
        spans[ex.pair[1]].classList.add("key");
      }
      target.appendChild(node);
    });
  }

  function metaList(pairs) {
    const dl = el("dl", null, "meta");
    for (const [key, value] of pairs) { dl.appendChild(el("dt", key)); dl.appendChild(el("dd", value)); }
    return dl;
  }

  function runDetails(pairs) {
    const box = el("details");
    box.appendChild(el("summary", "run details"));
    box.appendChild(metaList(pairs));
    return box;
  }

  // --- navigation and summary
  const nav = document.getElementById("nav");
  const navLinks = [["index", data.nav.index], ["\u2190 previous", data.nav.prev], ["next \u2192", data.nav.next]];
  for (const [label, href] of navLinks) {
    if (!href) continue;
    const a = el("a", label);
    a.href = href;
    nav.appendChild(a);
  }
  for (const note of data.notes) root.appendChild(el("p", note, "note"));
  panel("Unit").appendChild(metaList(data.meta));

  // --- explanations, scores and simulations
  for (const method of data.methods) {
    const section = panel("Method " + method.id);
    if (method.status === "failed") section.appendChild(el("p", "failed: " + (method.reason || "no reason recorded"), "status-failed"));
    if (!method.explanations.length && method.details.length) section.appendChild(runDetails(method.details));
    for (const explanation of method.explanations) {
      section.appendChild(el("p", explanation.text, "explanation-text"));
      if (explanation.scores.length) section.appendChild(scoreStrip(explanation.scores));
      if (explanation.sequences.length) {
        const legend = el("div", null, "row-labels");
        legend.appendChild(el("span", "upper row: true activations"));
        legend.appendChild(el("span", "lower row: simulated"));
        section.appendChild(legend);
      }
      if (method.details.length && explanation === method.explanations[0]) section.appendChild(runDetails(method.details));
      if (explanation.examples.length) {
        folded(section, `judged examples \u00b7 ${explanation.examples.length}`, (box) => fillExamples(box, explanation.examples));
      }
      explanation.sequences.forEach((seq, i) => {
        const head = [`scored excerpt ${i + 1}`];
        if (seq.label) head.push(seq.label);
        head.push("correlation " + score(seq.correlation));
        if (seq.scale === "true") head.push("calibrated");
        section.appendChild(el("div", head.join(" \u00b7 "), "excerpt-head"));
        section.appendChild(pairedExcerptNode(seq));
      });
    }
  }

  // --- the record's excerpts
  function fillGroup(target, records) {
    if (!records.length) { target.appendChild(el("p", "none in this record", "muted")); return; }
    records.forEach((record, i) => {
      target.appendChild(el("div", `excerpt ${i + 1} \u00b7 max ${fmt(record.max, 4)}`, "excerpt-head"));
      target.appendChild(record.pairs ? pairExcerptNode(record.tokens, record.pairs)
                                      : excerptNode(record.tokens, record.activations));
    });
  }
  for (const group of data.excerpts) {
    if (!group.folded) { fillGroup(panel(group.title), group.records); continue; }
    const section = panel("");
    section.replaceChildren();
    folded(section, `${group.title} \u00b7 ${group.records.length} excerpts`, (box) => fillGroup(box, group.records));
  }

  // --- related tokens
  if (data.related.length) {
    const section = panel("Related tokens");
    const grid = el("div", null, "related");
    for (const list of data.related) {
      const box = el("div");
      box.appendChild(el("h3", list.title));
      const ol = el("ol");
      list.tokens.forEach((token, i) => {
        const li = el("li");
        li.appendChild(tokenNode(token, null, 0, () => [list.value_name + " " + fmt(list.values[i], 4)]));
        li.appendChild(el("span", fmt(list.values[i]), "num"));
        ol.appendChild(li);
      });
      box.appendChild(ol);
      grid.appendChild(box);
    }
    section.appendChild(grid);
  }
  performance.mark("viewer-ready");
  document.body.dataset.ready = "true";
})();
