// xrp live page: a small SVG plotting kit (no library, no CDN) and the page logic.
// Rows arrive as Server-Sent Events from /ui/api/runs/<run>/events (live/page.py).
"use strict";
const NS = "http://www.w3.org/2000/svg";
const rows = [];           // compact answers in arrival order
let raster = null;         // {rows, cols, snake}
let thumb = null;          // thumbnail meta (geometry for the rings)
let thumbStamp = null;
let centre = null;         // the grid scan's centring (live/centre.py), when it is one

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

// viridis-like ramp, t in [0, 1]
function colour(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// A scatter/line trace: pts [{x, y, lo, hi}], y axis from opts.ymin..opts.ymax.
function trace(svg, pts, opts) {
  clear(svg);
  const W = svg.clientWidth || 800, H = svg.clientHeight || 130, L = 48, B = 18, T = 6;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.dataset.points = String(pts.length);
  const ys = pts.flatMap(p => [p.lo ?? p.y, p.hi ?? p.y]);
  const x0 = 0, x1 = Math.max(1, opts.xmax);  // every panel shares the frame axis
  let y0 = opts.ymin ?? Math.min(...ys), y1 = opts.ymax ?? Math.max(...ys);
  if (!isFinite(y0) || !isFinite(y1)) { y0 = 0; y1 = 1; }
  if (y1 - y0 < 1e-9) { y1 = y0 + 1; }
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - 8);
  const Y = y => opts.flip ? T + (y - y0) / (y1 - y0) * (H - T - B)
                           : H - B - (y - y0) / (y1 - y0) * (H - T - B);
  el("line", {x1: L, y1: H - B, x2: W - 8, y2: H - B, class: "axis"}, svg);
  el("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}, svg);
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    el("text", {x: L - 4, y: Y(v) + 4, "text-anchor": "end", class: "label"}, svg)
      .textContent = v.toFixed(opts.digits ?? 1);
  }
  el("text", {x: L + 4, y: T + 10, class: "label"}, svg).textContent = opts.label;
  el("text", {x: W - 8, y: H - 4, "text-anchor": "end", class: "label"}, svg)
    .textContent = `frame ${x1}`;
  for (const p of pts) {
    if (p.lo !== undefined) {
      el("line", {x1: X(p.x), x2: X(p.x), y1: Y(p.lo), y2: Y(p.hi), stroke: "#bbb"}, svg);
    }
    el("circle", {cx: X(p.x), cy: Y(p.y), r: 2.2, fill: opts.colour || "#3b528b",
                  "data-frame": p.x}, svg);
  }
}

function drawTraces() {
  const xmax = rows.reduce((m, r) => Math.max(m, r.frame), 1);
  const res = rows.filter(r => r.resolution_A != null).map(r => ({
    x: r.frame, y: r.resolution_A, lo: r.resolution_A - (r.resolution_sigma_A || 0),
    hi: r.resolution_A + (r.resolution_sigma_A || 0)}));
  trace(document.getElementById("trace-resolution"), res,
        {label: "resolution (Å, ± sigma; better is up)", flip: true, digits: 2, xmax});
  trace(document.getElementById("trace-pmulti"),
        rows.filter(r => r.p_multi != null).map(r => ({x: r.frame, y: r.p_multi})),
        {label: "p_multi", ymin: 0, ymax: 1, digits: 1, colour: "#21918c", xmax});
  trace(document.getElementById("trace-spots"),
        rows.filter(r => r.n_spots != null).map(r => ({x: r.frame, y: r.n_spots})),
        {label: "spots", ymin: 0, digits: 0, colour: "#5ec962", xmax});
}

// Grid-scan heat map: one rect per raster cell, in raster or snake order.
function drawHeatmap() {
  const svg = document.getElementById("heatmap");
  clear(svg);
  if (centre && centre.mode === "positions") return drawPositions(svg);
  if (!raster) {
    el("text", {x: 10, y: 20, class: "label"}, svg).textContent =
      "no raster: xrp watch --grid ROWSxCOLS, or ?rows=R&cols=C&snake=1";
    svg.dataset.cells = "0";
    return;
  }
  const W = svg.clientWidth || 400, H = svg.clientHeight || 320;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const s = Math.min(W / raster.cols, H / raster.rows);
  const by = document.getElementById("colour-by").value;
  const byFrame = new Map(rows.map(r => [r.frame, r]));
  const vals = rows.filter(r => r.hit).map(r => by === "spots" ? r.n_spots : r.resolution_A)
    .filter(v => v != null);
  const lo = Math.min(...vals);  // a span of at least 0.5 Å / 10 spots: no false contrast
  const hi = Math.max(...vals, lo + (by === "spots" ? 10 : 0.5));
  let n = 0;
  for (let f = 0; f < raster.rows * raster.cols; f++) {
    const row = Math.floor(f / raster.cols);
    let col = f % raster.cols;
    if (raster.snake && row % 2) col = raster.cols - 1 - col;
    const r = byFrame.get(f);
    let fill = "#fff", v = null;
    if (r) {
      v = by === "spots" ? r.n_spots : r.resolution_A;
      const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
      fill = r.error ? "#e88" : !r.hit ? "#ddd" : by === "spots" ? colour(t) : colour(1 - t);
    }
    const cell = el("rect", {x: col * s + 1, y: row * s + 1, width: s - 2, height: s - 2,
      fill, stroke: "#ccc", class: "cell", "data-frame": f, "data-row": row, "data-col": col,
      "data-hit": r ? String(Boolean(r.hit)) : "pending"}, svg);
    const text = r ? `frame ${f} (row ${row}, col ${col}): ${r.hit ? "hit" : "no hit"}, ` +
      `${r.n_spots ?? "-"} spots` + (r.resolution_A != null ?
      `, ${r.resolution_A.toFixed(2)} Å` : "") + (r.error ? `, ${r.error}` : "")
      : `frame ${f}: not yet`;
    el("title", {}, cell).textContent = text;
    cell.addEventListener("mouseenter", () => {
      document.getElementById("hover").textContent = text;
    });
    if (r) n++;
  }
  svg.dataset.cells = String(n);
  drawCentre(svg, s);
  const unit = by === "spots" ? " spots" : " Å";
  document.getElementById("legend").innerHTML = vals.length ?
    `<span style="background:${by === "spots" ? colour(0) : colour(1)}"></span>` +
    `${lo.toFixed(by === "spots" ? 0 : 2)}${unit} ` +
    `${by === "spots" ? "(fewest)" : "(best)"} ... ` +
    `<span style="background:${by === "spots" ? colour(1) : colour(0)}"></span>` +
    `${hi.toFixed(by === "spots" ? 0 : 2)}${unit} ${by === "spots" ? "(most)" : "(worst)"}; ` +
    `<span style="background:#ddd"></span>no hit` : "no hits yet";
}

// One crystal's spot-weighted centre: a ring with a cross and its number, at (cx, cy) px.
function centreMark(svg, crystal, cx, cy, r, data) {
  const mark = el("g", {class: "centre", "data-crystal": crystal, ...data}, svg);
  el("circle", {cx, cy, r, fill: "none", stroke: "#d33", "stroke-width": 2}, mark);
  el("line", {x1: cx - 1.6 * r, x2: cx + 1.6 * r, y1: cy, y2: cy, stroke: "#d33"}, mark);
  el("line", {x1: cx, x2: cx, y1: cy - 1.6 * r, y2: cy + 1.6 * r, stroke: "#d33"}, mark);
  el("text", {x: cx + r + 2, y: cy - r - 2, class: "label", fill: "#d33"}, mark)
    .textContent = String(crystal);
}

// The crystal(s) on the heat map: each region's extent (dashed box), its spot-weighted centre
// (a ring with a cross) and its number; the best cell outlined. Cells are (row, col) from 0.
function drawCentre(svg, s) {
  svg.dataset.crystals = "0";
  if (!centre || !raster || centre.rows !== raster.rows || centre.cols !== raster.cols) return;
  for (const g of centre.regions) {
    const e = g.extent;
    el("rect", {x: e.col_min * s + 0.5, y: e.row_min * s + 0.5, width: e.cols * s - 1,
                height: e.rows * s - 1, fill: "none", stroke: "#d33", "stroke-width": 1.2,
                "stroke-dasharray": "4 3", class: "extent"}, svg);
    centreMark(svg, g.crystal, (g.centre.col + 0.5) * s, (g.centre.row + 0.5) * s,
               Math.max(4, s / 4), {"data-row": g.centre.row, "data-col": g.centre.col});
  }
  const b = centre.best_cell;
  if (b) {
    el("rect", {x: b.col * s + 1, y: b.row * s + 1, width: s - 2, height: s - 2, fill: "none",
                stroke: "#000", "stroke-width": 2, class: "best"}, svg);
  }
  svg.dataset.crystals = String(centre.regions.length);
}

// A scan placed by motor positions (live/centre.py centre_at): each answered frame a dot at
// its position (µm, absolute; x to the right, y down), hits coloured by spot count; each
// crystal's bounds (dashed), its spot-weighted centre (a ring with a cross) and number; the
// best frame ringed in black.
function drawPositions(svg) {
  const W = svg.clientWidth || 400, H = svg.clientHeight || 320, pad = 16;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pts = centre.points || [];
  svg.dataset.cells = String(pts.length);
  svg.dataset.crystals = String(centre.regions.length);
  if (!pts.length) {
    el("text", {x: 10, y: 20, class: "label"}, svg).textContent = "no frame placed yet";
    return;
  }
  const step = centre.step_um ? Math.max(...centre.step_um, 1e-6) : 1;
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs) - step / 2, y0 = Math.min(...ys) - step / 2;
  const k = Math.min((W - 2 * pad) / (Math.max(...xs) + step / 2 - x0),
                     (H - 2 * pad) / (Math.max(...ys) + step / 2 - y0));
  const X = x => pad + (x - x0) * k, Y = y => pad + (y - y0) * k;
  const spots = pts.filter(p => p[3]).map(p => p[4] ?? 0);
  const lo = Math.min(...spots), hi = Math.max(...spots, lo + 10);
  for (const [x, y, frame, hit, n] of pts) {
    const dot = el("circle", {cx: X(x), cy: Y(y), r: Math.max(2, step * k / 2 - 1),
      fill: hit ? colour(((n ?? 0) - lo) / (hi - lo)) : "#ddd", stroke: "#ccc",
      class: "point", "data-frame": frame, "data-hit": String(Boolean(hit))}, svg);
    const text = `frame ${frame} at x ${x}, y ${y} µm: ${hit ? "hit" : "no hit"}, ` +
      `${n ?? "-"} spots`;
    el("title", {}, dot).textContent = text;
    dot.addEventListener("mouseenter", () => {
      document.getElementById("hover").textContent = text;
    });
  }
  for (const g of centre.regions) {
    const b = g.bounds_um, c = g.centre_um, r = Math.max(4, step * k / 4);
    el("rect", {x: X(b.x_min - step / 2), y: Y(b.y_min - step / 2),
      width: (b.x_max - b.x_min + step) * k, height: (b.y_max - b.y_min + step) * k,
      fill: "none", stroke: "#d33", "stroke-width": 1.2, "stroke-dasharray": "4 3",
      class: "extent"}, svg);
    centreMark(svg, g.crystal, X(c.x), Y(c.y), r, {"data-x": c.x, "data-y": c.y});
  }
  const best = centre.best_cell;
  if (best) {
    el("circle", {cx: X(best.um.x), cy: Y(best.um.y), r: Math.max(3, step * k / 2),
                  fill: "none", stroke: "#000", "stroke-width": 2, class: "best"}, svg);
  }
  document.getElementById("legend").innerHTML = spots.length ?
    `<span style="background:${colour(0)}"></span>${lo} spots (fewest) ... ` +
    `<span style="background:${colour(1)}"></span>${hi} spots (most); ` +
    `<span style="background:#ddd"></span>no hit; motor positions, µm` : "no hits yet";
}

// One line per crystal: centre (and extent) in cells, and in µm with the grid step; a scan
// placed by motor positions: in absolute µm.
function centreText() {
  if (!centre) return "";
  if (!centre.regions.length) return "centre: no hit yet";
  if (centre.mode === "positions") return positionsText();
  const um = p => p ? ` = x ${p.x.toFixed(1)}, y ${p.y.toFixed(1)} µm` : "";
  const b = centre.best_cell;
  return centre.regions.map(g =>
    `crystal ${g.crystal}: centre row ${g.centre.row.toFixed(2)}, col ` +
    `${g.centre.col.toFixed(2)}${um(g.centre_um)}; ${g.extent.rows} x ${g.extent.cols} cells` +
    (g.extent_um ? ` (${g.extent_um.x} x ${g.extent_um.y} µm)` : "") +
    `, ${g.n_cells} hits, ${g.spots} spots`).join("\n") +
    `\nbest cell: row ${b.row}, col ${b.col} (frame ${b.frame}, ${b.n_spots} spots)` +
    um(b.um);
}

function positionsText() {
  const xy = p => `x ${p.x.toFixed(1)}, y ${p.y.toFixed(1)} µm`;
  const b = centre.best_cell;
  return centre.regions.map(g =>
    `crystal ${g.crystal}: centre ${xy(g.centre_um)}; extent ${g.extent_um.x} x ` +
    `${g.extent_um.y} µm, ${g.n_cells} hits, ${g.spots} spots`).join("\n") +
    `\nbest frame ${b.frame} (${b.n_spots} spots) at ${xy(b.um)}`;
}

// The run's source, cell and grid step, and a grid run's centre.
function drawInfo(snap) {
  const parts = [`source: ${snap.source}`];
  if (snap.cell) parts.push(`cell: ${snap.cell.map(v => +v.toFixed(2)).join(", ")} (Å, °)`);
  else parts.push("cell: not given");
  if (raster) {
    parts.push(`grid: ${raster.rows} x ${raster.cols}${raster.snake ? " snake" : ""}` +
      (snap.step_um ? `, step ${snap.step_um[0]} x ${snap.step_um[1]} µm` : ""));
  }
  if (centre && centre.mode === "positions") {
    parts.push(`positions: from ${centre.positions_from.join(", ") || "-"}, ` +
      (centre.layout === "raster" ? `a ${centre.raster.rows} x ${centre.raster.cols} raster`
       : centre.layout || "none placed") + `, ${centre.placed} placed` +
      (centre.without_position ? `, ${centre.without_position} without a position` : ""));
  }
  document.getElementById("run-info").textContent = parts.join("; ");
  document.getElementById("centre-text").textContent = centreText();
}

// Resolution rings on the thumbnail: r = D tan(2 asin(lambda / 2d)) / pixel, in thumb px.
function drawRings() {
  const svg = document.getElementById("rings");
  clear(svg);
  if (!thumb) return;
  svg.setAttribute("viewBox", `0 0 ${thumb.width} ${thumb.height}`);
  if (thumb.grid_d_min_A) return gridRings(svg);  // a multi-panel frame, on the q grid
  if (!thumb.wavelength_A || !thumb.distance_mm) return;
  const [f0, s0] = thumb.beam_center_px;
  const W = thumb.width * thumb.scale, H = thumb.height * thumb.scale;
  const edge = Math.max(Math.hypot(f0, s0), Math.hypot(W - f0, s0), Math.hypot(f0, H - s0),
                        Math.hypot(W - f0, H - s0));  // px to the farthest corner
  const radius = d => {
    const x = thumb.wavelength_A / (2 * d);
    return x >= 1 ? Infinity : thumb.distance_mm * Math.tan(2 * Math.asin(x)) /
      thumb.pixel_size_mm;
  };
  const shown = [40, 20, 10, 8, 6, 5, 4, 3.5, 3, 2.5, 2, 1.8, 1.6, 1.4, 1.2, 1, 0.8]
    .filter(d => radius(d) > 0.08 * edge && radius(d) < edge);
  const step = Math.max(1, Math.ceil(shown.length / 5));
  for (const d of shown.filter((_, i) => i % step === 0)) {
    const r = radius(d) / thumb.scale;
    el("circle", {cx: f0 / thumb.scale, cy: s0 / thumb.scale, r, fill: "none",
                  stroke: "#d33", "stroke-width": 0.8, "stroke-dasharray": "3 2"}, svg);
    el("text", {x: f0 / thumb.scale + r * 0.707 + 2, y: s0 / thumb.scale - r * 0.707,
                class: "label", fill: "#d33"}, svg).textContent = `${d} Å`;
  }
}

// Rings on a reciprocal-space grid thumbnail: d sits at radius (1/d) / cell from the middle.
function gridRings(svg) {
  const c = thumb.width / 2, perA = c * thumb.grid_d_min_A;  // px per 1/Å
  for (const d of [10, 5, 3, 2, 1.5]) {
    const r = perA / d;
    el("circle", {cx: c, cy: c, r, fill: "none", stroke: "#d33", "stroke-width": 0.8,
                  "stroke-dasharray": "3 2"}, svg);
    el("text", {x: c + r * 0.707 + 2, y: c - r * 0.707, class: "label", fill: "#d33"}, svg)
      .textContent = `${d} Å`;
  }
}

function setCounter(id, v) {
  const e = document.getElementById(id);
  e.textContent = String(v);
  e.dataset.value = String(v);
}

function apply(snap) {
  for (const r of snap.rows) rows.push(r);
  const c = snap.counters;
  setCounter("c-frames", c.frames); setCounter("c-hits", c.hits);
  setCounter("c-multi", c.multi); setCounter("c-rate", c.frames_per_s);
  setCounter("c-queued", c.queued); setCounter("c-dropped", c.dropped);
  setCounter("c-errors", c.errors);
  setCounter("c-saved", c.saved ?? 0); setCounter("c-save-failed", c.save_failed ?? 0);
  for (const id of ["saved", "save-failed"]) {
    document.getElementById(`k-${id}`).hidden = !(c.saved || c.save_failed);
  }
  document.getElementById("source").textContent = snap.source;
  const q = new URLSearchParams(location.search);
  raster = q.get("rows") ? {rows: +q.get("rows"), cols: +q.get("cols"),
                            snake: q.get("snake") === "1"} : snap.raster;
  const centreMoved = snap.centre !== undefined && !q.get("rows");
  if (centreMoved) centre = snap.centre;
  drawInfo(snap);
  if (snap.thumb && snap.thumb_updated !== thumbStamp) {
    thumbStamp = snap.thumb_updated;
    thumb = snap.thumb;
    document.getElementById("thumb").src =
      `/ui/runs/${encodeURIComponent(RUN)}/thumb.png?t=${thumbStamp}`;
    document.getElementById("thumb-label").textContent =
      `${thumb.file.split("/").pop()} frame ${thumb.frame}`;
    drawRings();
  }
  if (snap.rows.length || centreMoved || !document.getElementById("heatmap").firstChild) {
    drawTraces();
    drawHeatmap();
  }
}

function connect() {
  const status = document.getElementById("status");
  const src = new EventSource(`/ui/api/runs/${encodeURIComponent(RUN)}/events?after=` +
    (rows.length ? rows[rows.length - 1].seq : -1));
  src.onmessage = ev => { status.textContent = "live"; apply(JSON.parse(ev.data)); };
  src.onerror = () => { status.textContent = "reconnecting..."; src.close();
                        setTimeout(connect, 2000); };
}

document.getElementById("colour-by").addEventListener("change", drawHeatmap);
window.addEventListener("resize", () => { drawTraces(); drawHeatmap(); });
connect();
