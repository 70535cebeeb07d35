/* NeurFlow circuit viewer: selection, detail panel, label search, debug overlay.
   Reads the JSON block #viewer-data; the graphs themselves are server-rendered inline SVG. */
(function () {
  "use strict";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("viewer-data").textContent);
  var detail = document.getElementById("detail");
  var search = document.getElementById("search");
  var hide = document.getElementById("hide-nonmatching");
  var count = document.getElementById("match-count");
  var graphs = data.graphs.map(function (g) {
    var section = document.querySelector('section.graph-section[data-graph="' + g.index + '"]');
    var byId = {};
    g.groups.forEach(function (grp) { byId[grp.id] = grp; });
    var debugById = {};
    if (g.debug) g.debug.groups.forEach(function (d) { debugById[d.id] = d; });
    return { data: g, section: section, byId: byId, debugById: debugById };
  });

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
  function fmt(x, digits) { return (x === null || x === undefined) ? "" : Number(x).toFixed(digits === undefined ? 2 : digits); }
  function nodesOf(graph) { return graph.section.querySelectorAll("g.node[data-group-id]"); }
  function nodeOf(graph, id) {
    var found = null;
    nodesOf(graph).forEach(function (n) { if (n.getAttribute("data-group-id") === id) found = n; });
    return found;
  }
  function groupLink(graph, id, text) {
    var a = el("a", { href: "#graph-" + graph.data.index + ":" + id, cls: "group-link", "data-goto": id, text: text || id });
    a.addEventListener("click", function (ev) { ev.preventDefault(); select(graph, id); });
    return a;
  }

  /* ---- detail panel ------------------------------------------------------------------------ */
  function renderDetail(graph, grp) {
    detail.textContent = "";
    detail.setAttribute("data-group-id", grp.id);
    detail.setAttribute("data-graph", String(graph.data.index));
    var top = grp.display || "unlabeled";
    detail.appendChild(el("h3", null, [el("span", { cls: "gid", text: grp.id }), " ",
      el("span", { cls: "layer", text: grp.layer }), " ", el("span", { cls: "graph-title", text: graph.data.title })]));
    detail.appendChild(el("p", { cls: "top-label" }, [el("b", { text: top }),
      grp.confidence === null ? null : el("span", { cls: "confidence", text: " confidence " + fmt(grp.confidence) })]));
    if (grp.uncertain) {
      detail.appendChild(el("p", { cls: "uncertain-note",
        text: "Uncertain: the evidence disagrees between two labels. Check the mosaic and pick one." }));
      detail.appendChild(el("ul", { cls: "candidates" }, grp.candidates.map(function (c) {
        var votes = c.votes.length ? c.votes.map(function (v) { return v.voter + " " + fmt(v.score, 3); }).join(", ")
                                   : "no vote names it first";
        return el("li", { "data-candidate": c.text }, [el("b", { text: c.text }), " ",
          el("span", { cls: "score", text: fmt(c.score, 3) }), " ", el("span", { cls: "votes", text: "(" + votes + ")" })]);
      })));
    }
    if (grp.correction) {
      var k = grp.correction;
      detail.appendChild(el("p", { cls: "correction", text: "Corrected by a person" + (k.key ? " (" + k.key + ")" : "") +
        " via " + k.via + (k.at ? " at " + k.at : "") + (k.previous ? "; the labeler said \u201c" + k.previous + "\u201d" : "") }));
    }
    if (grp.mosaic) {
      detail.appendChild(el("img", { cls: "mosaic", alt: "exemplar mosaic of " + grp.id,
        src: "data:image/png;base64," + grp.mosaic }));
    } else {
      detail.appendChild(el("p", { cls: "no-mosaic", text: grp.n_exemplars ? "exemplar mosaic not available" : "no exemplars" }));
    }
    if (grp.caption) {
      detail.appendChild(el("p", { cls: "caption" }, ["\u201c" + grp.caption.text + "\u201d ",
        el("span", { cls: "muted", text: "(" + grp.caption.model + ")" })]));
    }
    detail.appendChild(el("h4", { text: "Labels" }));
    if (grp.labels.length) {
      detail.appendChild(el("ol", { cls: "labels" }, grp.labels.map(function (lab) {
        return el("li", null, [el("span", { cls: "text", text: lab.text }), " ",
          el("span", { cls: "score", text: fmt(lab.score, 3) }), " ", el("span", { cls: "source", text: lab.source })]);
      })));
    } else {
      detail.appendChild(el("p", { cls: "muted", text: "no labels" }));
    }
    if (grp.ground_truth) {
      detail.appendChild(el("p", { cls: "ground-truth" }, ["ground-truth part ",
        el("b", { text: grp.ground_truth.part || "-" }), ", purity " + fmt(grp.ground_truth.purity)]));
    }
    var d = graph.debugById[grp.id];
    if (d) {
      detail.appendChild(el("p", { cls: "debug-line" + (d.fires ? " fires" : "") },
        [(d.fires ? "fires" : "does not fire") + " on the debug image: score " + fmt(d.score, 3) +
         ", ablating it changes the target logit by " + fmt(d.logit_change, 3)]));
    }
    detail.appendChild(el("h4", { text: "Members (" + grp.members.length + ")" }));
    detail.appendChild(el("ul", { cls: "members" }, grp.members.map(function (m) {
      return el("li", { "data-neuron": String(m.neuron), text: "neuron " + m.neuron + ", concept " + m.concept });
    })));
    var up = graph.data.edges.filter(function (e) { return e.target === grp.id; });
    var down = graph.data.edges.filter(function (e) { return e.source === grp.id; });
    function edgeList(cls, title, list, key) {
      if (!list.length) return;
      list = list.slice().sort(function (a, b) { return Math.abs(b.weight) - Math.abs(a.weight); });
      detail.appendChild(el("h4", { text: title }));
      detail.appendChild(el("ul", { cls: "edges " + cls }, list.map(function (e) {
        return el("li", null, [groupLink(graph, e[key]), " " + fmt(e.weight, 3)]);
      })));
    }
    edgeList("up", "From groups above", up, "source");
    edgeList("down", "To groups below", down, "target");
  }

  function select(graph, id) {
    var grp = graph.byId[id];
    if (!grp) return;
    document.querySelectorAll("g.node.selected").forEach(function (n) { n.classList.remove("selected"); });
    document.querySelectorAll("line.edge.linked").forEach(function (n) { n.classList.remove("linked"); });
    var node = nodeOf(graph, id);
    if (node) node.classList.add("selected");
    graph.section.querySelectorAll("line.edge").forEach(function (line) {
      if (line.getAttribute("data-source") === id || line.getAttribute("data-target") === id) line.classList.add("linked");
    });
    renderDetail(graph, grp);
    if (history.replaceState) history.replaceState(null, "", "#graph-" + graph.data.index + ":" + id);
  }

  /* ---- search ------------------------------------------------------------------------------ */
  function matches(grp, q) {
    if (!q) return true;
    return grp.labels.some(function (lab) { return lab.text.toLowerCase().indexOf(q) !== -1; });
  }
  function applySearch() {
    var q = search.value.trim().toLowerCase();
    var total = 0, hits = 0;
    graphs.forEach(function (graph) {
      var shown = {};
      nodesOf(graph).forEach(function (node) {
        var id = node.getAttribute("data-group-id");
        var ok = matches(graph.byId[id], q);
        total += 1;
        if (ok) hits += 1;
        shown[id] = ok;
        node.classList.toggle("dimmed", !ok);
        node.classList.toggle("match", !!q && ok);
      });
      graph.section.querySelectorAll("line.edge").forEach(function (line) {
        line.classList.toggle("dimmed", !(shown[line.getAttribute("data-source")] && shown[line.getAttribute("data-target")]));
      });
      graph.section.querySelectorAll("tr[data-group-id]").forEach(function (row) {
        row.classList.toggle("dimmed", !shown[row.getAttribute("data-group-id")]);
      });
    });
    count.setAttribute("data-matches", String(hits));
    count.setAttribute("data-total", String(total));
    count.textContent = q ? hits + " of " + total + " groups match" : total + " groups";
  }
  search.addEventListener("input", applySearch);
  hide.addEventListener("change", function () { document.body.classList.toggle("hide-nonmatching", hide.checked); });

  /* ---- groups table ------------------------------------------------------------------------ */
  function renderTable(graph) {
    var host = graph.section.querySelector(".table-host");
    var head = el("tr", null, ["layer", "group", "members", "label", "confidence", "ground-truth part", "purity"]
      .map(function (h) { return el("th", { text: h }); }));
    var rows = graph.data.groups.map(function (grp) {
      var row = el("tr", { "data-group-id": grp.id }, [el("td", { text: grp.layer }), el("td", null, [groupLink(graph, grp.id)]),
        el("td", { text: String(grp.members.length) }), el("td", { text: grp.display || "-" }),
        el("td", { text: fmt(grp.confidence) }), el("td", { text: grp.ground_truth ? (grp.ground_truth.part || "-") : "" }),
        el("td", { text: grp.ground_truth ? fmt(grp.ground_truth.purity) : "" })]);
      return row;
    });
    host.appendChild(el("table", null, [el("thead", null, [head]), el("tbody", null, rows)]));
  }

  /* ---- debug view -------------------------------------------------------------------------- */
  function renderDebug(graph) {
    var dbg = graph.data.debug;
    if (!dbg) return;
    graph.section.classList.add("has-debug");
    nodesOf(graph).forEach(function (node) {
      var d = graph.debugById[node.getAttribute("data-group-id")];
      if (!d) return;
      node.classList.add(d.fires ? "fired" : "quiet");
      node.setAttribute("data-debug-score", fmt(d.score, 4));
      var c = node.querySelector("circle");
      var badge = document.createElementNS(SVG_NS, "text");
      badge.setAttribute("class", "nscore");
      badge.setAttribute("x", String(Number(c.getAttribute("cx")) + 22));
      badge.setAttribute("y", String(Number(c.getAttribute("cy")) - 14));
      badge.textContent = fmt(d.score, 2);
      node.appendChild(badge);
    });
    var host = graph.section.querySelector(".debug-host");
    var box = el("div", { id: graph.data.index === 0 ? "debug" : "debug-" + graph.data.index, cls: "debug" });
    var fired = dbg.groups.filter(function (d) { return d.fires; });
    box.appendChild(el("h3", { text: "Debug: why this prediction" + (dbg.job_id ? " (job " + dbg.job_id + ")" : "") }));
    box.appendChild(el("p", { cls: "debug-summary", text: "target class " + dbg.target + ", predicted " + dbg.predicted +
      ", p(target) " + fmt(dbg.probability, 3) + ", logit " + fmt(dbg.logit, 3) + "; layer " + dbg.layer +
      ", threshold " + fmt(dbg.threshold) + ": " + fired.length + " of " + dbg.groups.length + " groups fire" }));
    var row = el("div", { cls: "debug-row" });
    if (dbg.image) {
      var frame = el("div", { cls: "debug-image" });
      frame.appendChild(el("img", { cls: "debug-input", alt: "debug input image", src: "data:" + dbg.image_mime + ";base64," + dbg.image }));
      if (dbg.image_size) {
        var w = dbg.image_size[0], h = dbg.image_size[1];
        fired.forEach(function (d, k) {
          d.crops.slice(0, 3).forEach(function (crop) {
            var b = crop.box;
            frame.appendChild(el("div", { cls: "crop c" + (k % 6), "data-group-id": d.id, title: d.id + " " + fmt(crop.score, 2),
              style: "left:" + (100 * b[0] / w) + "%;top:" + (100 * b[1] / h) + "%;width:" + (100 * (b[2] - b[0]) / w) +
                "%;height:" + (100 * (b[3] - b[1]) / h) + "%" }, [el("span", { text: d.id })]));
          });
        });
      }
      row.appendChild(frame);
    }
    var head = el("tr", null, ["group", "label", "score", "fires", "logit change"].map(function (h) { return el("th", { text: h }); }));
    var rows = dbg.groups.map(function (d) {
      return el("tr", { cls: d.fires ? "fires" : "", "data-group-id": d.id }, [el("td", null, [groupLink(graph, d.id)]),
        el("td", { text: d.label || "-" }), el("td", { text: fmt(d.score, 3) }), el("td", { text: d.fires ? "yes" : "no" }),
        el("td", { text: fmt(d.logit_change, 3) })]);
    });
    row.appendChild(el("table", { cls: "debug-groups" }, [el("thead", null, [head]), el("tbody", null, rows)]));
    box.appendChild(row);
    host.appendChild(box);
  }

  /* ---- wiring ------------------------------------------------------------------------------ */
  graphs.forEach(function (graph) {
    nodesOf(graph).forEach(function (node) {
      var id = node.getAttribute("data-group-id");
      node.addEventListener("click", function () { select(graph, id); });
      node.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(graph, id); }
      });
    });
    renderTable(graph);
    renderDebug(graph);
  });
  applySearch();
  var m = /^#graph-(\d+):(.+)$/.exec(location.hash);
  if (m && graphs[Number(m[1])]) select(graphs[Number(m[1])], decodeURIComponent(m[2]));
  /* ---- zoom, fit to width, layer names that stay in view ------------------------------------ */
  var zoom = 1;
  var zoomLevel = document.getElementById("zoom-level");
  var svgs = Array.prototype.slice.call(document.querySelectorAll("svg.circuit"));
  svgs.forEach(function (svg) {
    svg.baseWidth = Number(svg.getAttribute("width"));
    svg.baseHeight = Number(svg.getAttribute("height"));
  });
  function keepNamesInView(svg) {
    var names = svg.querySelector("g.layer-names");
    var box = svg.parentNode;
    if (names && box) names.setAttribute("transform", "translate(" + (box.scrollLeft / zoom) + ",0)");
  }
  function setZoom(z) {
    zoom = Math.max(0.2, Math.min(3, z));
    svgs.forEach(function (svg) {
      svg.setAttribute("width", String(Math.round(svg.baseWidth * zoom)));
      svg.setAttribute("height", String(Math.round(svg.baseHeight * zoom)));
      keepNamesInView(svg);
    });
    zoomLevel.textContent = Math.round(zoom * 100) + "%";
  }
  function fitZoom() {
    var widest = Math.max.apply(null, svgs.map(function (s) { return s.baseWidth; }).concat([1]));
    var room = Math.min.apply(null, svgs.map(function (s) { return s.parentNode.clientWidth; }).concat([widest]));
    return Math.min(1, room / widest);
  }
  svgs.forEach(function (svg) {
    svg.parentNode.addEventListener("scroll", function () { keepNamesInView(svg); });
  });
  document.getElementById("zoom-in").addEventListener("click", function () { setZoom(zoom * 1.25); });
  document.getElementById("zoom-out").addEventListener("click", function () { setZoom(zoom / 1.25); });
  document.getElementById("zoom-fit").addEventListener("click", function () { setZoom(fitZoom()); });
  setZoom(fitZoom());  // a wide circuit opens fitted to the page; zoom in to read it
})();
