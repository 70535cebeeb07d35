/* NeurFlow concept atlas: the class-by-concept matrix, label search, drill-down into a class's circuit.
   Reads #atlas-data (the neurflow.atlas/1 document) and #atlas-circuits (class index -> embedded
   circuit viewer page, may be empty). The search rule is neurflow.atlas.query's text match. */
(function () {
  "use strict";
  var root = JSON.parse(document.getElementById("atlas-data").textContent);
  var circuits = JSON.parse(document.getElementById("atlas-circuits").textContent);
  var atlas = root.atlas;
  var detail = document.getElementById("atlas-detail");
  var search = document.getElementById("atlas-search");
  var count = document.getElementById("atlas-match-count");
  var table = document.getElementById("atlas-matrix");

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fmt(x, d) { return (x === null || x === undefined) ? "" : Number(x).toFixed(d === undefined ? 2 : d); }

  var concepts = [], conceptById = {}, classByIndex = {}, cellOf = {}, blobUrl = null;
  atlas.layers.forEach(function (layer) {
    layer.concepts.forEach(function (c) { concepts.push(c); conceptById[c.id] = c; });
  });
  atlas.classes.forEach(function (k) { classByIndex[k.class_index] = k; });
  atlas.matrix.forEach(function (cell) { cellOf[cell.class_index + "/" + cell.concept] = cell; });
  function className(k) { var c = classByIndex[k]; return (c && c.name) ? c.name : "class " + k; }
  function classText(k) { return k + " " + className(k); }

  /* ---- the matrix ----------------------------------------------------------------------------- */
  function buildMatrix() {
    var thead = el("thead"), layerRow = el("tr"), conceptRow = el("tr");
    layerRow.appendChild(el("th", { cls: "corner", rowspan: "2", text: "class" }));
    atlas.layers.forEach(function (layer) {
      if (!layer.concepts.length) return;
      layerRow.appendChild(el("th", { cls: "layer", colspan: String(layer.concepts.length), text: layer.name }));
      layer.concepts.forEach(function (c) {
        var th = el("th", { cls: "concept", "data-concept": c.id, title: c.id + " · " + (c.label || "unlabeled") +
          " · " + c.classes.length + " classes" }, [el("span", { text: c.label || c.id })]);
        th.addEventListener("click", function () { showConcept(c.id); });
        conceptRow.appendChild(th);
      });
    });
    thead.appendChild(layerRow);
    thead.appendChild(conceptRow);
    var tbody = el("tbody");
    atlas.classes.forEach(function (k) {
      var tr = el("tr", { "data-class": String(k.class_index) });
      var name = el("button", { type: "button", cls: "class-name", text: classText(k.class_index) });
      name.addEventListener("click", function () { showClass(k.class_index); });
      tr.appendChild(el("th", { cls: "class" }, [name]));
      concepts.forEach(function (c) {
        var cell = cellOf[k.class_index + "/" + c.id];
        var td = el("td", { cls: cell ? "cell on" : "cell", "data-concept": c.id });
        if (cell) {
          td.style.setProperty("--s", String(0.15 + 0.85 * cell.strength));
          td.setAttribute("data-strength", fmt(cell.strength, 3));
          td.title = className(k.class_index) + " · " + (c.label || c.id) + ": strength " + fmt(cell.strength) +
            ", importance " + fmt(cell.importance) + " (" + cell.groups.join(", ") + ")";
          td.addEventListener("click", function () { showConcept(c.id, k.class_index); });
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(thead);
    table.appendChild(tbody);
    if (!concepts.length) {
      table.parentNode.appendChild(el("p", { cls: "empty", text: "No shared concepts: no groups of different " +
        "classes overlap enough in their neurons." }));
    }
  }

  /* ---- search (neurflow.atlas.query, text match) ---------------------------------------------- */
  function norm(s) { return s.split(/\s+/).filter(Boolean).join(" ").toLowerCase(); }
  function textScore(q, label) {
    label = norm(label);
    if (label === q) return 1;
    if (label.indexOf(q) >= 0) return 0.75;
    return q.split(" ").every(function (w) { return label.indexOf(w) >= 0; }) ? 0.5 : 0;
  }
  function runSearch() {
    var q = norm(search.value || "");
    var rows = table.querySelectorAll("tbody tr[data-class]");
    table.querySelectorAll("td.cell.hit, th.concept.hit").forEach(function (n) { n.classList.remove("hit"); });
    if (!q) {
      rows.forEach(function (r) { r.classList.remove("dimmed", "match"); });
      count.textContent = "";
      count.removeAttribute("data-matches");
      return;
    }
    var matched = 0;
    rows.forEach(function (r) {
      var k = classByIndex[Number(r.getAttribute("data-class"))];
      var hit = false;
      k.groups.forEach(function (g) {
        if (!g.labels.some(function (t) { return textScore(q, t) > 0; })) return;
        hit = true;
        if (g.concept) {
          var td = r.querySelector('td.cell[data-concept="' + g.concept + '"]');
          if (td) td.classList.add("hit");
          var th = table.querySelector('th.concept[data-concept="' + g.concept + '"]');
          if (th) th.classList.add("hit");
        }
      });
      r.classList.toggle("dimmed", !hit);
      r.classList.toggle("match", hit);
      if (hit) matched += 1;
    });
    count.setAttribute("data-matches", String(matched));
    count.textContent = matched + " of " + rows.length + " classes use a concept like \u201c" + q + "\u201d";
  }

  /* ---- drill-down ----------------------------------------------------------------------------- */
  function select(selector) {
    table.querySelectorAll(".selected").forEach(function (n) { n.classList.remove("selected"); });
    if (selector) table.querySelectorAll(selector).forEach(function (n) { n.classList.add("selected"); });
  }
  function reportUrl(k) {
    return (root.report_url && k.circuit_id) ? root.report_url.split("{circuit_id}").join(encodeURIComponent(k.circuit_id)) : null;
  }
  function conceptBadge(id) {
    var c = conceptById[id];
    var a = el("a", { href: "#concept-" + id, cls: "concept-link", "data-concept": id, text: id + (c && c.label ? " " + c.label : "") });
    a.addEventListener("click", function (ev) { ev.preventDefault(); showConcept(id); });
    return a;
  }
  function classLink(k) {
    var a = el("a", { href: "#class-" + k, cls: "class-link", "data-class": String(k), text: classText(k) });
    a.addEventListener("click", function (ev) { ev.preventDefault(); showClass(k); });
    return a;
  }
  function showClass(index) {
    var k = classByIndex[index];
    select('tr[data-class="' + index + '"]');
    detail.textContent = "";
    detail.removeAttribute("data-concept");
    detail.setAttribute("data-class", String(index));
    detail.appendChild(el("h3", { text: "Class " + classText(index) }));
    detail.appendChild(el("p", { cls: "muted", text: k.n_groups + " groups" + (k.circuit_id ? " · circuit " + k.circuit_id : "") }));
    var url = reportUrl(k);
    if (url) detail.appendChild(el("p", null, [el("a", { cls: "report-link", href: url, target: "_blank", rel: "noopener",
      text: "open its circuit viewer" })]));
    var layers = {};
    k.groups.forEach(function (g) { (layers[g.layer] = layers[g.layer] || []).push(g); });
    Object.keys(layers).forEach(function (name) {
      detail.appendChild(el("h4", { text: name }));
      detail.appendChild(el("ul", { cls: "class-groups" }, layers[name].map(function (g) {
        return el("li", { "data-group": g.id }, [el("span", { cls: "gid", text: g.id }), " ",
          el("b", { text: g.labels.length ? g.labels[0] : "unlabeled" }), " ",
          g.concept ? conceptBadge(g.concept) : el("span", { cls: "muted", text: "(this class only)" }),
          el("span", { cls: "muted", text: " · " + g.neurons.length + " neurons" })]);
      })));
    });
    var page = circuits[String(index)];
    if (page || url) {
      var frame = el("iframe", { cls: "circuit-viewer", title: "circuit viewer of class " + index });
      /* a blob URL, not srcdoc: the viewer keeps the selected group in its URL (history.replaceState),
         which an about:srcdoc document may not do */
      if (blobUrl) URL.revokeObjectURL(blobUrl);
      blobUrl = page ? URL.createObjectURL(new Blob([page], { type: "text/html" })) : null;
      frame.src = blobUrl || url;
      var holder = el("div", { cls: "viewer-holder" }, [frame]);
      document.getElementById("atlas-main").insertBefore(holder, document.getElementById("matrix-section").nextSibling);
      var old = document.querySelectorAll(".viewer-holder");
      old.forEach(function (h) { if (h !== holder) h.remove(); });
      holder.insertBefore(el("h2", { text: "Circuit of class " + classText(index) }), frame);
    }
  }
  function showConcept(id, fromClass) {
    var c = conceptById[id];
    select('td.cell[data-concept="' + id + '"], th.concept[data-concept="' + id + '"]');
    detail.textContent = "";
    detail.removeAttribute("data-class");
    detail.setAttribute("data-concept", id);
    detail.appendChild(el("h3", null, [el("span", { cls: "gid", text: id }), " ", el("b", { text: c.label || "unlabeled" }),
      " ", el("span", { cls: "muted", text: c.layer })]));
    detail.appendChild(el("p", { cls: "muted", text: c.classes.length + " classes, " + c.groups.length + " groups, cohesion " +
      fmt(c.cohesion) + " (mean Jaccard)" }));
    if (c.labels.length > 1) {
      detail.appendChild(el("p", { cls: "concept-labels", text: "top labels: " + c.labels.map(function (l) {
        return l.text + " ×" + l.count; }).join(", ") }));
    }
    detail.appendChild(el("h4", { text: "Classes" }));
    detail.appendChild(el("ul", { cls: "concept-classes" }, c.groups.map(function (g) {
      var cell = cellOf[g.class_index + "/" + id];
      return el("li", { "data-class": String(g.class_index), cls: g.class_index === fromClass ? "from" : "" },
        [classLink(g.class_index), " ", el("span", { cls: "gid", text: g.group }),
          cell ? el("span", { cls: "muted", text: " strength " + fmt(cell.strength) }) : null]);
    })));
    detail.appendChild(el("h4", { text: "Core neurons" }));
    detail.appendChild(el("p", { cls: "neurons", text: c.core.join(", ") + (c.neurons.length > c.core.length ?
      "  (all: " + c.neurons.length + ")" : "") }));
  }

  /* ---- pairs, neurons, labels ------------------------------------------------------------------- */
  function buildPairs() {
    var host = document.getElementById("pairs-host");
    if (!atlas.subcircuits.length) { host.appendChild(el("p", { cls: "empty", text: "No two classes share linked concepts on connected layers." })); return; }
    var t = el("table", { id: "atlas-pairs" }, [el("thead", null, [el("tr", null, ["classes", "score", "layers", "depth", "linked concepts"]
      .map(function (h) { return el("th", { text: h }); }))])]);
    var body = el("tbody");
    atlas.subcircuits.forEach(function (p) {
      body.appendChild(el("tr", { "data-a": String(p.a), "data-b": String(p.b) }, [
        el("td", null, [classLink(p.a), " & ", classLink(p.b)]), el("td", { text: fmt(p.score, 3) }),
        el("td", { text: p.layers.join(" → ") }), el("td", { text: String(p.depth) }),
        el("td", null, p.links.map(function (l) { return el("span", { cls: "link" }, [conceptBadge(l.upper), " → ", conceptBadge(l.lower)]); }))]));
    });
    t.appendChild(body);
    host.appendChild(t);
    if (atlas.subcircuits_omitted) host.appendChild(el("p", { cls: "muted", text: atlas.subcircuits_omitted + " weaker pairs not listed" }));
  }
  function buildNeurons() {
    var host = document.getElementById("neurons-host");
    atlas.layers.forEach(function (layer) {
      if (!layer.neurons.length) return;
      host.appendChild(el("h3", { text: layer.name }));
      var t = el("table", { cls: "atlas-neurons", "data-layer": layer.name }, [el("thead", null, [el("tr", null,
        ["neuron", "classes", "mean importance", "concepts"].map(function (h) { return el("th", { text: h }); }))])]);
      var body = el("tbody");
      layer.neurons.forEach(function (n) {
        var mean = n.importance.reduce(function (a, b) { return a + b; }, 0) / n.importance.length;
        body.appendChild(el("tr", { "data-neuron": String(n.neuron) }, [el("td", { cls: "gid", text: String(n.neuron) }),
          el("td", null, [el("b", { text: String(n.classes.length) }), " ", el("span", { cls: "muted", text: n.classes.map(className).join(", ") })]),
          el("td", { text: fmt(mean) }), el("td", null, n.concepts.map(conceptBadge))]));
      });
      t.appendChild(body);
      host.appendChild(t);
      if (layer.neurons_omitted) host.appendChild(el("p", { cls: "muted", text: layer.neurons_omitted + " more not listed" }));
    });
    if (!host.childNodes.length) host.appendChild(el("p", { cls: "empty", text: "No neuron is a core neuron of several classes." }));
  }
  function buildLabels() {
    var host = document.getElementById("labels-host");
    atlas.layers.forEach(function (layer) {
      if (!layer.labels.length) return;
      host.appendChild(el("h3", { text: layer.name }));
      host.appendChild(el("ul", { cls: "recurring-labels", "data-layer": layer.name }, layer.labels.map(function (r) {
        return el("li", null, [el("b", { text: r.text }), " ", el("span", { cls: "muted", text: r.classes.length + " classes: " +
          r.classes.map(className).join(", ") + " " })].concat(r.concepts.map(conceptBadge)));
      })));
    });
    if (!host.childNodes.length) host.appendChild(el("p", { cls: "empty", text: "No top label recurs across classes." }));
  }

  buildMatrix();
  buildPairs();
  buildNeurons();
  buildLabels();
  search.addEventListener("input", runSearch);
})();
