// patchorder attention explorer: renders the data embedded by patchorder.explore.report into linked views.
// Plain ES2020, no dependencies, nothing fetched: the page works from file:// and inside a W&B Html panel.
//
// Test hook (documented in README.md's explorer section, checked by tests/test_explore_hooks.py): window.explorer exposes the state, setters that
// act like the toolbar, and readers of what the page shows (heatmapValues, highlightedPatches, ...).
"use strict";
(function () {
  const explorer = (window.explorer = { ready: false, errors: [], readyAt: null });
  window.addEventListener("error", (e) => reportError(e.message || String(e)));
  window.addEventListener("unhandledrejection", (e) => reportError(String(e.reason && e.reason.stack || e.reason)));

  const SCATTER_SIZE = 360;
  const GRID_SIZE = 360;
  const PAD = 14;
  const CLICK_SLOP = 4; // px: a drag shorter than this is a click
  const PICK_RADIUS = 8; // px: how close a click must be to a point
  const THUMB_SIZE = 96; // px: side of an overview thumbnail

  let data = null;
  let arrays = null;
  const sides = [];
  const state = {
    variant: 0, stage: 0, block: 0, route: "merged", image: "mean", mode: "patches", method: "pca",
    colorBy: "column", patch: null, highlighted: new Set(), highlightedPoints: new Set(),
    pathRoute: "off", logColor: true, ignoreSelf: false, opacity: 0.65, sharedScale: true, relevance: null,
  };
  // The log colour scale spans [floor * max, max], floor = the W&B pictures' log_floor (set from the data).
  let logDecades = 3;

  // ---------- decoding ----------
  function base64Bytes(text) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
    const binary = atob(text);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  async function inflate(bytes) {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser lacks DecompressionStream (needs Chrome 80+, Firefox 113+, Safari 16.4+)");
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  function halfToFloat(bits) {
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) {
      const h = bits[i], sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
      if (exp === 0) out[i] = sign * frac * 2 ** -24;
      else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
      else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
    }
    return out;
  }

  const TYPES = { u8: [Uint8Array, 1], i32: [Int32Array, 4], f32: [Float32Array, 4], f16: [Uint16Array, 2] };

  async function decodeArrays(entries, bytes) {
    return Promise.all(entries.map(async (entry, id) => {
      const stored = bytes.subarray(entry.o, entry.o + entry.z);
      const raw = entry.c ? await inflate(stored) : stored.slice(); // slice: own, aligned buffer
      const [Type, width] = TYPES[entry.t];
      if (raw.byteLength !== entry.n * width) throw new Error(`array ${id}: ${raw.byteLength} bytes, expected ${entry.n * width}`);
      const typed = new Type(raw.buffer, raw.byteOffset, entry.n);
      return entry.t === "f16" ? halfToFloat(typed) : typed;
    }));
  }

  // ---------- data access ----------
  const log8Tables = new Map();
  function log8Table(floor) {
    if (!log8Tables.has(floor)) {
      const table = new Float64Array(256);
      for (let c = 1; c < 256; c++) table[c] = Math.exp(Math.log(floor) * (255 - c) / 254);
      log8Tables.set(floor, table);
    }
    return log8Tables.get(floor);
  }

  // One row (length L) of a stored (.., L, L) matrix: `matrix` is the index of the (image, route) matrix.
  function matrixRow(ref, matrix, row, L) {
    const out = new Float32Array(L);
    const start = (matrix * L + row) * L;
    if (ref.enc === "log8") {
      const codes = arrays[ref.codes], scale = arrays[ref.scales][matrix * L + row], table = log8Table(ref.floor);
      for (let k = 0; k < L; k++) out[k] = scale * table[codes[start + k]];
    } else {
      const values = arrays[ref.values];
      for (let k = 0; k < L; k++) out[k] = values[start + k] * ref.scale;
    }
    return out;
  }

  function variantOf(side) {
    const wanted = data.sides[0].variants[state.variant].reduce;
    return side.data.variants.find((v) => v.reduce === wanted) || null;
  }
  function blocksOfStage(side, stage) {
    const variant = variantOf(side);
    return variant ? variant.blocks.filter((b) => b.stage === stage) : [];
  }
  function currentBlock(side) {
    return blocksOfStage(side, state.stage).find((b) => b.block === state.block) || null;
  }
  function gridOf(block) { return { H: block.grid[0], W: block.grid[1], L: block.grid[0] * block.grid[1] }; }

  // The attention row of the selected patch as the page shows it, or {reason} when it cannot be shown.
  function heatmap(side) {
    const block = currentBlock(side);
    if (!block) return { reason: "this side has no such block / reduction" };
    if (state.patch === null) return { reason: "click a patch (or a point) to see its attention" };
    return attentionRow(block, state.patch);
  }
  // Row `patch` of `block` for the selected route and image: {values, signed} or {reason}.
  function attentionRow(block, patch) {
    const ref = storedMatrix(block);
    if (ref.reason) return ref;
    return { values: matrixRow(ref.ref, ref.index, patch, gridOf(block).L), signed: block.encoding === "f16" };
  }
  // The stored matrix behind the selected route and image: {ref, index} or {reason}.
  function storedMatrix(block) {
    const view = block.views[state.route];
    if (!view) return { reason: `route ${state.route} is not in this export (it holds merged attention only)` };
    const perImage = state.image !== "mean";
    const ref = perImage ? view.images : view.mean;
    if (!ref) {
      const what = perImage ? "per-image matrices" : "the image mean";
      return { reason: `${what} of this route are not stored in this report (size budget); rebuild with a larger --max-mb` };
    }
    return { ref, index: perImage ? state.image : 0 };
  }

  // ---------- patches across stages ----------
  // The patch of grid `to` under the centre of patch `patch` of grid `from`: on a coarser grid the patch that
  // covers it (VMamba halves the grid per stage), on a finer one the patch at its centre.
  function mapPatch(from, patch, to) {
    const r = Math.floor(patch / from.W), c = patch % from.W;
    const row = Math.min(to.H - 1, Math.floor((r + 0.5) * to.H / from.H));
    const col = Math.min(to.W - 1, Math.floor((c + 0.5) * to.W / from.W));
    return row * to.W + col;
  }
  function finestGrid(side) {
    const variant = variantOf(side);
    const blocks = variant ? variant.blocks : [];
    return blocks.reduce((best, b) => (!best || gridOf(b).L > best.L ? gridOf(b) : best), null);
  }

  // Route k of a block (raster patch visited at each sequence position); default: the selected route, or the
  // forward route when the routes are merged.
  function routeOf(side, block, k = state.route === "merged" ? 0 : Number(state.route)) {
    const routes = arrays[block.routes];
    const { L } = gridOf(block);
    return routes.subarray(k * L, (k + 1) * L);
  }
  // The routes whose paths are drawn: [] (off), one route, or every route of the scheme.
  function pathRoutes(block) {
    if (state.pathRoute === "off") return [];
    const count = block.route_names.length;
    if (state.pathRoute === "all") return [...Array(count).keys()];
    return [Math.min(count - 1, Number(state.pathRoute))];
  }
  function positionsOf(route) {
    const pos = new Int32Array(route.length);
    route.forEach((patch, s) => { pos[patch] = s; });
    return pos;
  }

  // Points of the scatterplot for the current mode: {x, y, ids, kind} or {reason}.
  function scatterPoints(side) {
    const variant = variantOf(side);
    if (!variant) return { reason: "this side has no export with this reduction" };
    if (state.mode === "patches") {
      const block = currentBlock(side);
      if (!block) return { reason: "no such block" };
      const id = block.patch_embedding[state.method];
      if (id === undefined) return { reason: block.patch_embedding_notes[state.method] || `${state.method} was not computed for this report` };
      return unpackPoints(arrays[id], "patches", block.patch_embedding_notes[state.method]);
    }
    const entry = variant.block_embeddings[String(state.stage)];
    const id = entry && entry.coords[state.method];
    if (id === undefined) return { reason: `${state.method} was not computed for this report` };
    const points = unpackPoints(arrays[id], "blocks", entry.notes[state.method]);
    points.meta = entry.points;
    return points;
  }
  function unpackPoints(coords, kind, note) {
    const n = coords.length / 2, x = new Float32Array(n), y = new Float32Array(n);
    for (let i = 0; i < n; i++) { x[i] = coords[2 * i]; y[i] = coords[2 * i + 1]; }
    return { x, y, n, kind, note: note || "" };
  }

  // ---------- colours ----------
  function lut(name) { return data.colormaps[name]; }
  function colorAt(name, t) {
    const table = lut(name), i = Math.max(0, Math.min(255, Math.round(t * 255))) * 3;
    return `rgb(${table[i]},${table[i + 1]},${table[i + 2]})`;
  }
  function blockColor(index) { const c = data.colormaps.blocks; return c[index % c.length]; }

  // One colour scale over several attention rows (one per side when the sides share a scale).
  // `rows`: [{values, self}] with `self` the query patch, left out of the range when "ignore self" is on.
  function heatScale(rows, signed) {
    let lo = Infinity, hi = -Infinity;
    for (const { values, self } of rows) {
      values.forEach((v, k) => {
        if (state.ignoreSelf && k === self) return;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      });
    }
    if (!signed) lo = 0;
    if (!(hi > lo)) hi = lo + 1;
    const useLog = state.logColor && !signed;
    const floor = hi / 10 ** logDecades;
    const toUnit = useLog
      ? (v) => (v <= floor ? 0 : Math.min(1, Math.log10(v / floor) / logDecades))
      : (v) => Math.max(0, Math.min(1, (v - lo) / (hi - lo)));
    return { lo: useLog ? floor : lo, hi, toUnit, useLog };
  }

  // ---------- canvas helpers ----------
  function maxOf(values) { let top = 0; values.forEach((v) => { if (v > top) top = v; }); return top; }  // 0 if none > 0

  // A width x height canvas, one pixel per value (raster order), coloured by the heat table at toUnit(value).
  function pixelCanvas(width, height, values, toUnit) {
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    const ctx = canvas.getContext("2d"), image = ctx.createImageData(width, height), table = lut("heat");
    values.forEach((v, p) => {
      const c = Math.round(clamp(toUnit(v), 0, 1) * 255) * 3;
      image.data.set([table[c], table[c + 1], table[c + 2], 255], 4 * p);
    });
    ctx.putImageData(image, 0, 0);
    return canvas;
  }
  function setupCanvas(canvas, width, height) {
    const ratio = window.devicePixelRatio || 1;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return ctx;
  }
  function localPoint(canvas, event) {
    const rect = canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  // ---------- scatterplot ----------
  function scatterLayout(points) {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < points.n; i++) {
      x0 = Math.min(x0, points.x[i]); x1 = Math.max(x1, points.x[i]);
      y0 = Math.min(y0, points.y[i]); y1 = Math.max(y1, points.y[i]);
    }
    const span = Math.max(x1 - x0, y1 - y0) || 1; // equal aspect: distances read the same both ways
    const scale = (SCATTER_SIZE - 2 * PAD) / span;
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, mid = SCATTER_SIZE / 2;
    return {
      toPx: (x, y) => [mid + (x - cx) * scale, mid - (y - cy) * scale],
      toData: (px, py) => [cx + (px - mid) / scale, cy - (py - mid) / scale],
    };
  }

  function pointStyle(side, points, i, context) {
    if (points.kind === "blocks") {
      const [blockNumber, image] = points.meta[i];
      const order = context.stageBlocks.indexOf(blockNumber);
      const current = blockNumber === state.block && (state.image === "mean" || state.image === image);
      return { color: blockColor(order), radius: current ? 6 : 4.5, ring: current, key: `${blockNumber}:${image}` };
    }
    const { H, W } = context.grid;
    const row = Math.floor(i / W), col = i % W;
    const color = state.colorBy === "column"
      ? colorAt("column", W > 1 ? col / (W - 1) : 0.5)
      : colorAt("position", context.positions[i] / Math.max(1, context.grid.L - 1));
    const radius = state.colorBy === "column" ? 1.5 + 3.5 * (H > 1 ? row / (H - 1) : 0.5) : 3;
    return { color, radius, ring: i === state.patch, key: i };
  }

  function drawScatter(side) {
    const canvas = side.scatter, ctx = setupCanvas(canvas, SCATTER_SIZE, SCATTER_SIZE);
    ctx.clearRect(0, 0, SCATTER_SIZE, SCATTER_SIZE);
    const points = scatterPoints(side);
    side.points = points.reason ? null : points;
    side.layout = null;
    if (points.reason) {
      side.scatterNote.textContent = points.reason;
      side.legend.textContent = side.axisX.textContent = side.axisY.textContent = "";
      return;
    }
    side.scatterNote.textContent = points.note;
    const layout = (side.layout = scatterLayout(points));
    const context = scatterContext(side);
    const brushed = points.kind === "patches" ? state.highlighted : state.highlightedPoints;
    const dimming = brushed.size > 0;
    const rings = [];
    for (let i = 0; i < points.n; i++) {
      const style = pointStyle(side, points, i, context);
      const [px, py] = layout.toPx(points.x[i], points.y[i]);
      ctx.globalAlpha = dimming && !brushed.has(style.key) ? 0.15 : 0.9;
      ctx.fillStyle = style.color;
      ctx.beginPath();
      ctx.arc(px, py, style.radius, 0, 2 * Math.PI);
      ctx.fill();
      if (style.ring) rings.push([px, py, style.radius]);
    }
    ctx.globalAlpha = 1;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    for (const [px, py, r] of rings) { ctx.beginPath(); ctx.arc(px, py, r + 3, 0, 2 * Math.PI); ctx.stroke(); }
    if (side.drag && side.drag.canvas === canvas && side.drag.moved) {
      const { x0, y0, x1, y1 } = side.drag;
      ctx.strokeStyle = "#333"; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      ctx.setLineDash([]);
    }
    drawLegend(side, points, context);
  }

  function scatterContext(side) {
    const block = currentBlock(side);
    const context = { stageBlocks: blocksOfStage(side, state.stage).map((b) => b.block) };
    if (block) {
      context.grid = gridOf(block);
      context.positions = positionsOf(routeOf(side, block));
    }
    return context;
  }

  const METHOD_NAMES = { pca: "PCA", tsne: "t-SNE", umap: "UMAP" };
  const AXIS_NAMES = { pca: ["principal component 1", "principal component 2"], tsne: ["t-SNE 1", "t-SNE 2"], umap: ["UMAP 1", "UMAP 2"] };

  // A colour ramp with its end labels, for the legend.
  function ramp(name, from, to, label) {
    const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => `${colorAt(name, t)} ${t * 100}%`).join(", ");
    return `<span class="ramp-legend">${escapeHtml(label)}: ${escapeHtml(from)} <i class="ramp" style="background:linear-gradient(to right, ${stops})"></i> ${escapeHtml(to)}</span>`;
  }

  function drawLegend(side, points, context) {
    const methodName = METHOD_NAMES[state.method] || state.method;
    const [xName, yName] = AXIS_NAMES[state.method] || [`${methodName} 1`, `${methodName} 2`];
    side.axisX.textContent = `${xName} →`;
    side.axisY.textContent = `${yName} →`;
    const perImage = state.image !== "mean";
    if (points.kind === "blocks") {
      side.legend.innerHTML = "<span>colour = block:</span>" + context.stageBlocks
        .map((b, i) => `<span><i style="background:${blockColor(i)}"></i>block ${escapeHtml(String(b))}</span>`).join("") +
        "<span>one point per (block, image); ringed: the selected block" + (perImage ? " and image" : "") + "</span>";
      side.scatterCaption.textContent = `${methodName} of every (block, image) attention matrix of stage ${state.stage}; click a point to open it`;
      return;
    }
    const { H, W, L } = context.grid;
    if (state.colorBy === "column") {
      side.legend.innerHTML = ramp("column", "0", String(W - 1), "colour = column") +
        `<span class="size-legend">size = row: <i style="width:3px;height:3px"></i> 0 … <i style="width:10px;height:10px"></i> ${H - 1}</span>`;
    } else {
      const block = currentBlock(side), k = state.route === "merged" ? 0 : Number(state.route);
      side.legend.innerHTML = ramp("position", "0", String(L - 1), `colour = position in route ${k} (${block.route_names[k]})`);
    }
    const block = currentBlock(side), source = block && block.summed_routes ? "sum of routes" : "merged";
    const imageNote = perImage ? "; the layout is computed from the image mean, the image selector changes the heatmap only" : "";
    side.scatterCaption.textContent = `${methodName} of each patch's attention row (image mean, ${source})${imageNote}`;
  }

  // ---------- patch view ----------
  function imageCanvas(side, index) {
    side.imageCache = side.imageCache || new Map();
    if (!side.imageCache.has(index)) {
      const info = side.data.images, pixels = arrays[info.pixels], size = info.h * info.w;
      const canvas = document.createElement("canvas");
      canvas.width = info.w; canvas.height = info.h;
      const ctx = canvas.getContext("2d"), image = ctx.createImageData(info.w, info.h);
      for (let p = 0; p < size; p++) {
        const src = (index * size + p) * 3;
        image.data[4 * p] = pixels[src]; image.data[4 * p + 1] = pixels[src + 1];
        image.data[4 * p + 2] = pixels[src + 2]; image.data[4 * p + 3] = 255;
      }
      ctx.putImageData(image, 0, 0);
      side.imageCache.set(index, canvas);
    }
    return side.imageCache.get(index);
  }

  function gridLayout(block) {
    const { H, W } = gridOf(block);
    const cell = Math.min(GRID_SIZE / W, GRID_SIZE / H);
    return { H, W, cell, width: cell * W, height: cell * H };
  }

  // Colour scales of the patch heatmaps: one per side, or one for both (compare mode, "one colour scale").
  function heatScales() {
    const rows = sides.map((side) => (side.heat && side.heat.values ? { values: side.heat.values, self: state.patch } : null));
    const signed = sides.some((side) => side.heat && side.heat.signed);
    if (sides.length > 1 && state.sharedScale) {
      const present = rows.filter(Boolean);
      const shared = present.length ? heatScale(present, signed) : null;
      return rows.map((row) => (row ? shared : null));
    }
    return rows.map((row, i) => (row ? heatScale([row], sides[i].heat.signed) : null));
  }

  function drawPatches(side, scale) {
    const block = currentBlock(side);
    if (!block) {
      setupCanvas(side.patches, GRID_SIZE, GRID_SIZE);
      setupCanvas(side.probe, GRID_SIZE, GRID_SIZE);
      side.patchNote.textContent = "this side has no such block";
      side.pathLegend.textContent = "";
      return;
    }
    const grid = (side.grid = gridLayout(block));
    const ctx = setupCanvas(side.patches, grid.width, grid.height);
    const imageIndex = state.image === "mean" ? 0 : state.image;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(imageCanvas(side, imageIndex), 0, 0, grid.width, grid.height);
    const heat = side.heat;
    side.heatScale = scale;
    if (heat.values && scale) {
      ctx.globalAlpha = state.opacity;
      for (let i = 0; i < heat.values.length; i++) {
        ctx.fillStyle = colorAt("heat", scale.toUnit(heat.values[i]));
        ctx.fillRect((i % grid.W) * grid.cell, Math.floor(i / grid.W) * grid.cell, grid.cell + 0.5, grid.cell + 0.5);
      }
      ctx.globalAlpha = 1;
    }
    drawColorbar(side, heat.values ? scale : null);
    side.patchNote.textContent = heat.reason || "";
    if (grid.cell >= 8) drawGridLines(ctx, grid);
    if (state.highlighted.size) drawHighlights(ctx, grid);
    side.drawnPaths = pathRoutes(block).map((k) => ({ k, route: routeOf(side, block, k) }));
    side.drawnPaths.forEach(({ k, route }, n) => drawPath(ctx, grid, route, side.drawnPaths.length > 1 ? n : null));
    drawPathLegend(side, block);
    if (state.patch !== null) outlinePatch(ctx, grid, state.patch);
    if (side.drag && side.drag.canvas === side.patches && side.drag.moved) {
      const { x0, y0, x1, y1 } = side.drag;
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      ctx.setLineDash([]);
    }
    drawProbe(side, grid, imageIndex);
    const background = state.image === "mean" ? "image 0 shown; attention averaged over all images" : side.data.image_names[state.image];
    side.patchCaption.textContent = `stage ${state.stage} block ${state.block}, ${grid.H}x${grid.W} patches; ${background}`;
  }

  function outlinePatch(ctx, grid, patch) {
    const r = Math.floor(patch / grid.W), c = patch % grid.W;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 3;
    ctx.strokeRect(c * grid.cell + 1.5, r * grid.cell + 1.5, grid.cell - 3, grid.cell - 3);
    ctx.strokeStyle = "#d6336c"; ctx.lineWidth = 1.5;
    ctx.strokeRect(c * grid.cell + 0.75, r * grid.cell + 0.75, grid.cell - 1.5, grid.cell - 1.5);
  }

  // The probe image beside the heatmap, unblended (pixels as stored), with the patch grid and the query patch.
  function drawProbe(side, grid, imageIndex) {
    const ctx = setupCanvas(side.probe, grid.width, grid.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(imageCanvas(side, imageIndex), 0, 0, grid.width, grid.height);
    if (grid.cell >= 8) {
      ctx.strokeStyle = "rgba(255,255,255,0.45)"; ctx.lineWidth = 1; ctx.setLineDash([2, 3]);
      ctx.beginPath();
      for (let c = 1; c < grid.W; c++) { ctx.moveTo(c * grid.cell, 0); ctx.lineTo(c * grid.cell, grid.height); }
      for (let r = 1; r < grid.H; r++) { ctx.moveTo(0, r * grid.cell); ctx.lineTo(grid.width, r * grid.cell); }
      ctx.stroke(); ctx.setLineDash([]);
    }
    if (state.patch !== null) outlinePatch(ctx, grid, state.patch);
  }

  function drawGridLines(ctx, grid) {
    ctx.strokeStyle = "rgba(255,255,255,0.25)"; ctx.lineWidth = 1;
    ctx.beginPath();
    for (let c = 1; c < grid.W; c++) { ctx.moveTo(c * grid.cell, 0); ctx.lineTo(c * grid.cell, grid.height); }
    for (let r = 1; r < grid.H; r++) { ctx.moveTo(0, r * grid.cell); ctx.lineTo(grid.width, r * grid.cell); }
    ctx.stroke();
  }

  function drawHighlights(ctx, grid) {
    ctx.fillStyle = "rgba(10,10,20,0.55)";
    for (let i = 0; i < grid.H * grid.W; i++) {
      if (!state.highlighted.has(i)) ctx.fillRect((i % grid.W) * grid.cell, Math.floor(i / grid.W) * grid.cell, grid.cell, grid.cell);
    }
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1;
    for (const i of state.highlighted) {
      ctx.strokeRect((i % grid.W) * grid.cell + 0.5, Math.floor(i / grid.W) * grid.cell + 0.5, grid.cell - 1, grid.cell - 1);
    }
  }

  // One route's path through the patch centres: coloured by sequence position (one route) or in the route's own
  // colour (several); the start is a filled disc, the end a square.
  function drawPath(ctx, grid, route, colourIndex) {
    const centre = (i) => [(i % grid.W + 0.5) * grid.cell, (Math.floor(i / grid.W) + 0.5) * grid.cell];
    const own = colourIndex === null ? null : blockColor(colourIndex);
    const colour = (t) => own || colorAt("position", t);
    const offset = colourIndex === null ? 0 : (colourIndex - 1.5) * Math.min(2, grid.cell / 10); // routes side by side
    ctx.lineWidth = Math.max(1, Math.min(3, grid.cell / 6));
    for (let s = 1; s < route.length; s++) {
      const [xa, ya] = centre(route[s - 1]), [xb, yb] = centre(route[s]);
      ctx.strokeStyle = colour(s / (route.length - 1));
      ctx.beginPath(); ctx.moveTo(xa + offset, ya + offset); ctx.lineTo(xb + offset, yb + offset); ctx.stroke();
    }
    const mark = Math.max(3, Math.min(9, grid.cell / 4));
    const [sx, sy] = centre(route[0]), [ex, ey] = centre(route[route.length - 1]);
    ctx.lineWidth = 1.5; ctx.strokeStyle = "#fff";
    ctx.fillStyle = colour(0);
    ctx.beginPath(); ctx.arc(sx + offset, sy + offset, mark, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    ctx.fillStyle = colour(1);
    ctx.fillRect(ex + offset - mark, ey + offset - mark, 2 * mark, 2 * mark);
    ctx.strokeRect(ex + offset - mark, ey + offset - mark, 2 * mark, 2 * mark);
  }

  function drawPathLegend(side, block) {
    const { W } = gridOf(block), at = (i) => `row ${Math.floor(i / W)}, col ${i % W}`;
    const several = side.drawnPaths.length > 1;
    side.pathLegend.innerHTML = side.drawnPaths.map(({ k, route }, n) => {
      const swatch = several ? `<i style="background:${blockColor(n)}"></i>` : "";
      return `<span>${swatch}path of route ${k} (${escapeHtml(block.route_names[k])}): ● start ${at(route[0])}, ` +
        `■ end ${at(route[route.length - 1])}</span>`;
    }).join("") + (side.drawnPaths.length === 1 ? "<span>colour = sequence position (viridis, dark = early)</span>" : "");
  }

  function drawColorbar(side, scale) {
    const ctx = setupCanvas(side.colorbar, 200, 10);
    if (!scale) { side.colorMin.textContent = side.colorMax.textContent = side.scaleNote.textContent = ""; return; }
    for (let x = 0; x < 200; x++) { ctx.fillStyle = colorAt("heat", x / 199); ctx.fillRect(x, 0, 1, 10); }
    side.colorMin.textContent = formatValue(scale.lo);
    side.colorMax.textContent = formatValue(scale.hi);
    const kind = scale.useLog ? `log scale over ${logDecades} decades (as the W&B pictures)` : "linear scale";
    const shared = sides.length > 1 && state.sharedScale ? "; one scale for both sides" : "";
    side.scaleNote.textContent = `${kind}${shared}`;
  }

  function formatValue(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e4 || a < 1e-3 ? v.toExponential(3) : v.toPrecision(4);
  }

  // ---------- model overview ----------
  // For the finest-grid patch `patch0` (stage 0 when exported): one entry per block with the patch that covers
  // it on that block's grid and its attention row (selected route and image), or the reason it is missing.
  function overviewEntries(side, patch0) {
    const variant = variantOf(side), grid0 = finestGrid(side);
    if (!variant || !grid0 || patch0 === null) return [];
    return variant.blocks.map((block) => {
      const grid = gridOf(block), patch = mapPatch(grid0, patch0, grid);
      return { block, patch, row: Math.floor(patch / grid.W), col: patch % grid.W, ...attentionRow(block, patch) };
    });
  }
  function selectedPatch0(side) {
    const block = currentBlock(side), grid0 = finestGrid(side);
    return block && grid0 && state.patch !== null ? mapPatch(gridOf(block), state.patch, grid0) : null;
  }

  function buildOverview(side) {
    const variant = side.data.variants[0];
    const stages = [...new Set(variant.blocks.map((b) => b.stage))];
    for (const [container, kind] of [[side.overview, "patch"], [side.overviewMatrix, "matrix"]]) {
      container.innerHTML = stages.map((stage) => {
        const blocks = variant.blocks.filter((b) => b.stage === stage);
        const { H, W } = gridOf(blocks[0]);
        return `<div class="stage-row"><span class="stage-label">stage ${stage}<br>${H}x${W}</span>` +
          blocks.map((b) => `<button type="button" class="thumb" data-key="${escapeHtml(b.key)}" data-stage="${b.stage}" ` +
            `data-block="${b.block}" title="open stage ${b.stage} block ${b.block}"><canvas></canvas>` +
            `<span>block ${b.block}</span></button>`).join("") + "</div>";
      }).join("");
      container.querySelectorAll("button.thumb").forEach((button) => {
        side.thumbs.set(`${kind}:${button.dataset.key}`, button);
        button.addEventListener("click", () => openFromOverview(side, Number(button.dataset.stage), Number(button.dataset.block)));
      });
    }
  }

  // Click on a thumbnail: open that block with the patch the overview showed for it.
  function openFromOverview(side, stage, blockNumber) {
    const patch0 = selectedPatch0(side), grid0 = finestGrid(side);
    select(stage, blockNumber);
    if (patch0 !== null) {
      state.patch = mapPatch(grid0, patch0, gridOf(currentBlock(sides[0])));
      render();
    }
  }

  function thumbSize(grid) {
    const cell = THUMB_SIZE / Math.max(grid.H, grid.W);
    return { cell, width: cell * grid.W, height: cell * grid.H };
  }

  function drawOverview(side, index, overviews) {
    const entries = overviews[index], grid0 = finestGrid(side), patch0 = selectedPatch0(side);
    const what = routeLabel(currentBlock(side)) + (state.image === "mean" ? ", image mean" : `, ${side.data.image_names[state.image]}`);
    if (patch0 === null) {
      side.overviewCaption.textContent = "click a patch to follow its attention through every block";
    } else {
      const shared = sides.length > 1 && state.sharedScale ? "; each block on one scale for both sides" : "";
      side.overviewCaption.textContent = `Attention of stage-0 patch (row ${Math.floor(patch0 / grid0.W)}, col ${patch0 % grid0.W}) ` +
        `in every block, mapped to the patch that covers it on coarser grids (outlined); ${what}; ` +
        `each thumbnail on its own ${state.logColor ? "log" : "linear"} scale${shared}. Click one to open that block.`;
    }
    for (const entry of entries) {
      const button = side.thumbs.get(`patch:${entry.block.key}`);
      if (!button) continue;
      button.classList.toggle("current", entry.block.stage === state.stage && entry.block.block === state.block);
      const grid = gridOf(entry.block), size = thumbSize(grid);
      const ctx = setupCanvas(button.querySelector("canvas"), size.width, size.height);
      ctx.fillStyle = "#eee"; ctx.fillRect(0, 0, size.width, size.height);
      button.title = entry.reason ? `stage ${entry.block.stage} block ${entry.block.block}: ${entry.reason}` :
        `open stage ${entry.block.stage} block ${entry.block.block} (patch row ${entry.row}, col ${entry.col})`;
      if (!entry.values) continue;
      const rows = [{ values: entry.values, self: entry.patch }];
      if (sides.length > 1 && state.sharedScale) {
        overviews.forEach((other, j) => {
          const twin = j !== index && other.find((e) => e.block.key === entry.block.key && e.values);
          if (twin) rows.push({ values: twin.values, self: twin.patch });
        });
      }
      const scale = heatScale(rows, entry.signed);
      for (let i = 0; i < entry.values.length; i++) {
        ctx.fillStyle = colorAt("heat", scale.toUnit(entry.values[i]));
        ctx.fillRect((i % grid.W) * size.cell, Math.floor(i / grid.W) * size.cell, size.cell + 0.5, size.cell + 0.5);
      }
      ctx.strokeStyle = "#2fd3ff"; ctx.lineWidth = Math.max(1, Math.min(2, size.cell / 3));
      ctx.strokeRect(entry.col * size.cell + 0.5, entry.row * size.cell + 0.5, size.cell - 1, size.cell - 1);
    }
    drawMatrixOverview(side);
  }

  function routeLabel(block) {
    if (!block) return "";
    if (state.route === "merged") return block.summed_routes ? "all routes summed" : "merged routes";
    return `route ${state.route} (${block.route_names[Number(state.route)]})`;
  }

  // Every block's attention matrix (rows = query, columns = key patch), averaged over tiles down to the thumbnail
  // size and coloured like the W&B matrix pictures (|values| over their maximum, log floor of the pictures).
  function drawMatrixOverview(side) {
    const variant = variantOf(side);
    side.overviewMatrixCaption.textContent = `Attention matrices of every block (${routeLabel(currentBlock(side))}, ` +
      `${state.image === "mean" ? "image mean" : side.data.image_names[state.image]}; rows = query patch, columns = key ` +
      `patch, raster order; ${state.logColor ? "log" : "linear"} colour per matrix, as the W&B pictures). Click one to open it.`;
    if (!variant) return;
    for (const block of variant.blocks) {
      const button = side.thumbs.get(`matrix:${block.key}`);
      if (!button) continue;
      button.classList.toggle("current", block.stage === state.stage && block.block === state.block);
      const picture = matrixThumbnail(side, block);
      const canvas = button.querySelector("canvas");
      const ctx = setupCanvas(canvas, THUMB_SIZE, THUMB_SIZE);
      ctx.fillStyle = "#eee"; ctx.fillRect(0, 0, THUMB_SIZE, THUMB_SIZE);
      button.title = picture.reason ? `stage ${block.stage} block ${block.block}: ${picture.reason}` : `open stage ${block.stage} block ${block.block}`;
      if (picture.canvas) { ctx.imageSmoothingEnabled = false; ctx.drawImage(picture.canvas, 0, 0, THUMB_SIZE, THUMB_SIZE); }
    }
  }

  function matrixThumbnail(side, block) {
    const stored = storedMatrix(block);
    if (stored.reason) return stored;
    const key = `${block.key}|${state.variant}|${state.route}|${state.image}|${state.logColor}`;
    side.matrixCache = side.matrixCache || new Map();
    if (!side.matrixCache.has(key)) {
      const { L } = gridOf(block), tile = Math.max(1, Math.ceil(L / THUMB_SIZE)), n = Math.ceil(L / tile);
      const sums = new Float64Array(n * n), counts = new Float64Array(n * n);
      for (let q = 0; q < L; q++) {
        const row = matrixRow(stored.ref, stored.index, q, L), base = Math.floor(q / tile) * n;
        for (let k = 0; k < L; k++) { sums[base + Math.floor(k / tile)] += Math.abs(row[k]); counts[base + Math.floor(k / tile)] += 1; }
      }
      for (let i = 0; i < sums.length; i++) sums[i] /= counts[i];
      const top = maxOf(sums);
      const canvas = pixelCanvas(n, n, sums, (v) => {
        const relative = top > 0 ? v / top : 0;
        return state.logColor ? Math.max(0, 1 + Math.log10(Math.max(relative, 10 ** -logDecades)) / logDecades) : relative;
      });
      side.matrixCache.set(key, { canvas });
    }
    return side.matrixCache.get(key);
  }

  // What the heatmap's numbers are, in one line.
  function drawUnit(side) {
    const variant = variantOf(side), block = currentBlock(side);
    if (!variant || !block) { side.unit.textContent = ""; return; }
    const meaning = (data.reduce_meanings || {})[variant.reduce] || variant.reduce;
    const routes = block.summed_routes && state.route === "merged" ? "; the export keeps routes apart, shown here summed" : "";
    side.unit.textContent = `values (${variant.reduce}): ${meaning}${routes}`;
  }

  // ---------- metrics ----------
  function drawMetrics(side) {
    const block = currentBlock(side), table = side.metrics;
    if (!block) { table.innerHTML = ""; return; }
    const variant = variantOf(side);
    const rows = block.metrics.map(([name, value]) =>
      `<tr><td>${escapeHtml(name)}</td><td class="value">${formatMetric(value)}</td></tr>`);
    const { H, W } = gridOf(block);
    rows.push(`<tr><td>grid</td><td class="value">${H} x ${W}</td></tr>`);
    rows.push(`<tr><td>routes</td><td class="value">${escapeHtml(block.route_names.join(", "))}</td></tr>`);
    rows.push(`<tr><td>stored as</td><td class="value">${block.encoding === "log8" ? "uint8 log scale" : "float16"}</td></tr>`);
    table.innerHTML = `<caption>stage ${escapeHtml(String(block.stage))} block ${escapeHtml(String(block.block))} (${escapeHtml(variant.reduce)})</caption>${rows.join("")}`;
    const n = side.data.images.n;
    side.metricsNote.textContent = `Metrics over all ${n} images` +
      (state.image === "mean" ? "." : `, not only ${side.data.image_names[state.image]}.`);
  }
  function formatMetric(v) { return v === null ? "n/a" : typeof v === "number" ? formatValue(v) : escapeHtml(String(v)); }
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // ---------- interaction ----------
  function attachScatter(side) {
    attachDrag(side, side.scatter, (drag) => {
      if (!side.points || !side.layout) return;
      if (!drag.moved) return pickPoint(side, drag.x1, drag.y1);
      const [ax, ay] = side.layout.toData(drag.x0, drag.y0), [bx, by] = side.layout.toData(drag.x1, drag.y1);
      brush(ax, ay, bx, by, sides.indexOf(side));
    });
    side.scatter.addEventListener("pointermove", (event) => showPointHover(side, localPoint(side.scatter, event)));
    side.scatter.addEventListener("pointerleave", () => { side.info.textContent = ""; });
  }

  function nearestPoint(side, px, py) {
    let best = -1, bestDistance = PICK_RADIUS;
    for (let i = 0; i < side.points.n; i++) {
      const [x, y] = side.layout.toPx(side.points.x[i], side.points.y[i]);
      const d = Math.hypot(x - px, y - py);
      if (d <= bestDistance) { best = i; bestDistance = d; }
    }
    return best;
  }

  function showPointHover(side, p) {
    if (!side.points || !side.layout || side.drag) return;
    const i = nearestPoint(side, p.x, p.y);
    if (i < 0) { side.info.textContent = ""; return; }
    if (side.points.kind === "blocks") {
      const [blockNumber, image] = side.points.meta[i];
      side.info.textContent = `stage ${state.stage} block ${blockNumber}, ${side.data.image_names[image]}`;
      return;
    }
    const block = currentBlock(side), { W, L } = gridOf(block);
    const position = positionsOf(routeOf(side, block))[i];
    side.info.textContent = `patch row ${Math.floor(i / W)}, column ${i % W} · position ${position} of ${L}`;
  }

  function pickPoint(side, px, py) {
    const best = nearestPoint(side, px, py);
    if (best < 0) return;
    if (side.points.kind === "patches") {
      state.patch = best;
    } else {
      const [blockNumber, image] = side.points.meta[best];
      state.block = blockNumber;
      state.image = image;
    }
    render();
  }

  function attachPatches(side) {
    attachDrag(side, side.patches, (drag) => {
      if (!side.grid) return;
      const cellOf = (x, y) => [
        clamp(Math.floor(y / side.grid.cell), 0, side.grid.H - 1), clamp(Math.floor(x / side.grid.cell), 0, side.grid.W - 1)];
      const [r1, c1] = cellOf(drag.x1, drag.y1);
      if (!drag.moved) return clickPatch(r1, c1);
      const [r0, c0] = cellOf(drag.x0, drag.y0);
      const picked = new Set();
      for (let r = Math.min(r0, r1); r <= Math.max(r0, r1); r++) {
        for (let c = Math.min(c0, c1); c <= Math.max(c0, c1); c++) picked.add(r * side.grid.W + c);
      }
      state.mode = "patches";
      state.highlighted = picked;
      render();
    });
    side.patches.addEventListener("pointermove", (event) => showHover(side, localPoint(side.patches, event)));
    side.patches.addEventListener("pointerleave", () => { side.info.textContent = ""; });
  }

  function attachDrag(side, canvas, finish) {
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      const p = localPoint(canvas, event);
      side.drag = { canvas, x0: p.x, y0: p.y, x1: p.x, y1: p.y, moved: false };
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!side.drag || side.drag.canvas !== canvas) return;
      const p = localPoint(canvas, event);
      Object.assign(side.drag, { x1: p.x, y1: p.y });
      side.drag.moved = side.drag.moved || Math.hypot(p.x - side.drag.x0, p.y - side.drag.y0) > CLICK_SLOP;
      if (side.drag.moved) canvas === side.scatter ? drawScatter(side) : drawPatches(side, side.heatScale);
    });
    canvas.addEventListener("pointerup", (event) => {
      if (!side.drag || side.drag.canvas !== canvas) return;
      const p = localPoint(canvas, event), drag = side.drag;
      Object.assign(drag, { x1: p.x, y1: p.y });
      drag.moved = drag.moved || Math.hypot(p.x - drag.x0, p.y - drag.y0) > CLICK_SLOP;
      side.drag = null;
      finish(drag);
      render();
      if (canvas === side.patches) showHover(side, p); // the hovered value changes with the selection
    });
  }

  function showHover(side, p) {
    if (!side.grid) return;
    const r = Math.floor(p.y / side.grid.cell), c = Math.floor(p.x / side.grid.cell);
    if (r < 0 || c < 0 || r >= side.grid.H || c >= side.grid.W) { side.info.textContent = ""; return; }
    const block = currentBlock(side), i = r * side.grid.W + c;
    const position = positionsOf(routeOf(side, block))[i];
    const routeName = state.route === "merged" ? `${block.route_names[0]} route` : block.route_names[Number(state.route)];
    let text = `row ${r}, column ${c} · position ${position} of ${gridOf(block).L} in the ${routeName}`;
    if (side.heat && side.heat.values) {
      text += ` · attention of patch ${Math.floor(state.patch / side.grid.W)},${state.patch % side.grid.W} on it: ${formatValue(side.heat.values[i])}`;
    }
    side.info.textContent = text;
  }

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  // ---------- whole-model relevance (the export's <tag>_relevance.npz: rollout, attribution, ... and ERFs) ----------
  function relevanceKinds(side) { return side.data.relevance && !side.data.relevance.problem ? side.data.relevance.names : []; }
  function allRelevanceKinds() { return [...new Set(sides.flatMap(relevanceKinds))]; }

  // A map over the stage-0 grid (raster order): one image's, or the mean over the probe images.
  function relevanceMap(side, image, kind) {
    const rel = side.data.relevance;
    if (!rel || rel.problem || !(kind in rel.maps)) return null;
    const size = rel.grid[0] * rel.grid[1], all = arrays[rel.maps[kind]], n = all.length / size;
    if (image !== "mean") return all.subarray(image * size, (image + 1) * size);
    const out = new Float64Array(size);
    for (let i = 0; i < n; i++) for (let p = 0; p < size; p++) out[p] += all[i * size + p];
    return out.map((v) => v / n);
  }

  function erfMap(side, stage) {
    const rel = side.data.relevance, entry = rel && !rel.problem && rel.erf.find((e) => e.stage === stage);
    return entry ? { ...entry, data: arrays[entry.values] } : null;
  }

  // The map over the probe image, linear colour from 0 to the map's maximum (as the W&B overlays).
  function drawRelevance(side) {
    const rel = side.data.relevance;
    side.relevanceView.hidden = !rel;
    if (!rel) return;
    if (rel.problem) { side.relevanceCaption.textContent = rel.problem; setupCanvas(side.relevanceCanvas, 0, 0); return; }
    const kind = rel.names.includes(state.relevance) ? state.relevance : rel.names[0];
    const values = relevanceMap(side, state.image, kind), [h, w] = rel.grid;
    const cell = Math.min(GRID_SIZE / w, GRID_SIZE / h), ctx = setupCanvas(side.relevanceCanvas, cell * w, cell * h);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(imageCanvas(side, state.image === "mean" ? 0 : state.image), 0, 0, cell * w, cell * h);
    const top = maxOf(values);
    ctx.globalAlpha = state.opacity;
    values.forEach((v, i) => {
      ctx.fillStyle = colorAt("heat", top > 0 ? Math.max(0, v) / top : 0);
      ctx.fillRect((i % w) * cell, Math.floor(i / w) * cell, cell + 0.5, cell + 0.5);
    });
    ctx.globalAlpha = 1;
    side.relevanceShown = { kind, image: state.image, values };
    const which = state.image === "mean" ? `mean over the ${side.data.images.n} probe images (image 0 shown)` :
      side.data.image_names[state.image];
    side.relevanceCaption.textContent = `${kind} over the ${h}x${w} stage-0 grid, ${which}; linear colour from 0 ` +
      `to the map's maximum ${formatValue(top)}, blended over the image (opacity slider).`;
    const faith = rel.faithfulness;
    if (!faith.length) { side.faithTable.innerHTML = ""; return; }
    const lowest = Math.min(...faith.map((r) => r.deletion_auc)), highest = Math.max(...faith.map((r) => r.insertion_auc));
    side.faithTable.innerHTML = `<caption>faithfulness (mean over images)</caption>` +
      `<tr><td>map</td><td class="value">deletion AUC (lower wins)</td><td class="value">insertion AUC (higher wins)</td></tr>` +
      faith.map((r) => `<tr data-map="${escapeHtml(r.map)}"><td>${escapeHtml(r.map)}</td>` +
        `<td class="value">${formatValue(r.deletion_auc)}${r.deletion_auc === lowest ? " ✓" : ""}</td>` +
        `<td class="value">${formatValue(r.insertion_auc)}${r.insertion_auc === highest ? " ✓" : ""}</td></tr>`).join("");
  }

  // One panel per stage: the effective receptive field over the input pixels, log colour over 3 decades.
  function buildErf(side) {
    const rel = side.data.relevance;
    if (rel && rel.problem) return;
    if (!rel || !rel.erf.length) { side.erfCaption.textContent = rel ? "No effective receptive field in this file." : ""; return; }
    side.erfCaption.textContent = "Effective receptive field of each stage's centre patch (sum over images and " +
      "channels of relu(dS/dx) over the input pixels); log colour over 3 decades of each map's maximum.";
    for (const entry of rel.erf) {
      const figure = document.createElement("figure");
      figure.className = "erf-stage";
      figure.dataset.stage = String(entry.stage);
      const values = arrays[entry.values], scale = Math.max(1, Math.floor(160 / Math.max(entry.h, entry.w)));
      const top = maxOf(values), floor = top / 1e3;
      const canvas = pixelCanvas(entry.w, entry.h, values, (v) => (top > 0 && v > floor ? Math.log10(v / floor) / 3 : 0));
      canvas.style.width = `${entry.w * scale}px`; canvas.style.height = `${entry.h * scale}px`;
      canvas.style.imageRendering = "pixelated";
      const caption = document.createElement("figcaption");
      caption.textContent = `stage ${entry.stage}: sum ${formatValue(entry.sum)}, max ${formatValue(top)}`;
      figure.append(canvas, caption);
      side.erf.appendChild(figure);
    }
  }

  function setRelevance(kind) {
    if (!allRelevanceKinds().includes(kind)) {
      throw new Error(`no relevance map ${kind}; have ${allRelevanceKinds().join(", ") || "none (no <tag>_relevance.npz beside the export)"}`);
    }
    state.relevance = kind;
    render();
  }

  // ---------- toolbar ----------
  const $ = (id) => document.getElementById(id);
  function fillSelect(select, options, value) {
    select.innerHTML = options.map(([v, label, disabled]) =>
      `<option value="${escapeHtml(v)}"${disabled ? " data-missing" : ""}>${escapeHtml(label)}</option>`).join("");
    select.value = String(value);
    select.disabled = options.length < 2;
  }

  function syncToolbar() {
    const left = sides[0], variant = variantOf(left), block = currentBlock(left);
    fillSelect($("sel-reduce"), left.data.variants.map((v, i) => [i, v.reduce]), state.variant);
    fillSelect($("sel-stage"), left.data.stages.map((s) => [s, `stage ${s}`]), state.stage);
    fillSelect($("sel-block"), blocksOfStage(left, state.stage).map((b) => [b.block, `block ${b.block}`]), state.block);
    const routes = [["merged", block && block.summed_routes ? "all routes, summed" : "merged"]];
    if (block) {
      block.route_names.forEach((name, k) => {
        const view = block.views[String(k)];
        if (view) routes.push([String(k), `${k}: ${name}${view.mean || view.images ? "" : " (not stored)"}`]);
      });
    }
    fillSelect($("sel-route"), routes, state.route);
    const view = block && block.views[state.route];
    const images = [["mean", "mean over images"]].concat(left.data.image_names.map((name, n) =>
      [n, name + (view && !view.images ? " (not stored)" : "")]));
    fillSelect($("sel-image"), images, state.image);
    $("sel-mode").value = state.mode;
    const single = !blocksModeAvailable(state.stage);
    $("sel-mode").querySelector('option[value="blocks"]').disabled = single;
    $("mode-note").textContent = single ? `(stage ${state.stage}: one block, no block scatter)` : "";
    $("mode-note").title = single ? singleBlockReason(state.stage) : "";
    const paths = [["off", "off"]].concat((block ? block.route_names : []).map((name, k) => [String(k), `route ${k}: ${name}`]));
    if (block && block.route_names.length > 1) paths.push(["all", "all routes"]);
    fillSelect($("sel-path"), paths, state.pathRoute);
    $("chk-shared").checked = state.sharedScale;
    $("lbl-shared").hidden = sides.length < 2;
    const methods = methodsOf(variant);
    fillSelect($("sel-method"), methods.map((m) => [m, { pca: "PCA", tsne: "t-SNE", umap: "UMAP" }[m] || m]), state.method);
    $("sel-color").value = state.colorBy;
    $("sel-color").disabled = state.mode !== "patches";
    $("chk-log").checked = state.logColor;
    $("chk-self").checked = state.ignoreSelf;
    $("rng-opacity").value = String(state.opacity);
    const kinds = allRelevanceKinds();
    $("lbl-relevance").hidden = !kinds.length;
    if (kinds.length) fillSelect($("sel-relevance"), kinds.map((k) => [k, k]), state.relevance);
  }

  function methodsOf(variant) {
    return data.methods.filter((m) => variant.blocks.some((b) => m in b.patch_embedding));
  }

  function bindToolbar() {
    $("sel-reduce").addEventListener("change", (e) => setVariant(Number(e.target.value)));
    $("sel-stage").addEventListener("change", (e) => select(Number(e.target.value), null));
    $("sel-block").addEventListener("change", (e) => select(state.stage, Number(e.target.value)));
    $("sel-route").addEventListener("change", (e) => setRoute(e.target.value));
    $("sel-image").addEventListener("change", (e) => setImage(e.target.value));
    $("sel-mode").addEventListener("change", (e) => setMode(e.target.value));
    $("sel-method").addEventListener("change", (e) => setMethod(e.target.value));
    $("sel-color").addEventListener("change", (e) => { state.colorBy = e.target.value; render(); });
    $("sel-path").addEventListener("change", (e) => setPathRoute(e.target.value));
    $("chk-shared").addEventListener("change", (e) => { state.sharedScale = e.target.checked; render(); });
    $("chk-log").addEventListener("change", (e) => { state.logColor = e.target.checked; render(); });
    $("chk-self").addEventListener("change", (e) => { state.ignoreSelf = e.target.checked; render(); });
    $("rng-opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value); render(); });
    $("sel-relevance").addEventListener("change", (e) => setRelevance(e.target.value));
    $("btn-clear").addEventListener("click", clearBrush);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") clearBrush(); });
  }

  // ---------- state changes (the toolbar and the test hook share these) ----------
  function select(stage, block) {
    const left = sides[0];
    if (!left.data.stages.includes(stage)) throw new Error(`no stage ${stage}; stages: ${left.data.stages.join(", ")}`);
    const blocks = blocksOfStage(left, stage).map((b) => b.block);
    const wanted = block === null || block === undefined ? blocks[0] : block;
    if (!blocks.includes(wanted)) throw new Error(`stage ${stage} has no block ${wanted}; blocks: ${blocks.join(", ")}`);
    const previous = currentBlock(left);
    state.stage = stage;
    state.block = wanted;
    const next = currentBlock(left);
    if (!previous || next.grid.join("x") !== previous.grid.join("x")) {
      // patch indices mean nothing on another grid: keep the patch under the same place of the image
      state.patch = previous && state.patch !== null ? mapPatch(gridOf(previous), state.patch, gridOf(next)) : centrePatch(next);
      state.highlighted = new Set();
    }
    state.highlightedPoints = new Set();
    if (!next.views[state.route]) state.route = "merged";
    if (state.mode === "blocks" && !blocksModeAvailable(stage)) state.mode = "patches";
    render();
  }
  function centrePatch(block) { const { H, W } = gridOf(block); return Math.floor(H / 2) * W + Math.floor(W / 2); }
  function setVariant(index) {
    if (!sides[0].data.variants[index]) throw new Error(`no reduction #${index}`);
    state.variant = index;
    select(state.stage, state.block);
  }
  function setRoute(route) {
    const key = String(route), block = currentBlock(sides[0]);
    if (!block.views[key]) throw new Error(`route ${key} not in this export; choose merged or 0..${block.route_names.length - 1} when routes are kept`);
    state.route = key;
    render();
  }
  function setImage(image) {
    const value = image === "mean" ? "mean" : Number(image);
    if (value !== "mean" && !(value >= 0 && value < sides[0].data.images.n)) throw new Error(`no image ${image}`);
    state.image = value;
    render();
  }
  function setMode(mode) {
    if (mode !== "patches" && mode !== "blocks") throw new Error(`mode must be 'patches' or 'blocks', got ${mode}`);
    if (mode === "blocks" && !blocksModeAvailable(state.stage)) throw new Error(singleBlockReason(state.stage));
    state.mode = mode;
    render();
  }
  // The block scatter compares the blocks of a stage; with one block it would be a single cluster of images.
  function blocksModeAvailable(stage) { return blocksOfStage(sides[0], stage).length > 1; }
  function singleBlockReason(stage) {
    return `stage ${stage} has one block: a scatter of its blocks would be a single cluster of the ` +
      `${sides[0].data.images.n} images' matrices; choose a stage with several blocks`;
  }
  function setPathRoute(route) {
    const block = currentBlock(sides[0]), count = block.route_names.length;
    const value = route === "off" || route === "all" ? route : Number(route);
    if (value !== "off" && value !== "all" && !(Number.isInteger(value) && value >= 0 && value < count)) {
      throw new Error(`path must be 'off', 'all' or a route 0..${count - 1}, got ${route}`);
    }
    state.pathRoute = value === "off" || value === "all" ? value : String(value);
    render();
  }
  function setMethod(method) {
    if (!data.methods.includes(method)) throw new Error(`projection ${method} was not computed; have ${data.methods.join(", ")}`);
    state.method = method;
    render();
  }
  function clickPatch(row, col) {
    const { H, W } = gridOf(currentBlock(sides[0]));
    if (!(row >= 0 && row < H && col >= 0 && col < W)) throw new Error(`patch (${row}, ${col}) is outside the ${H}x${W} grid`);
    state.patch = row * W + col;
    render();
  }
  function brush(x0, y0, x1, y1, sideIndex = 0) {
    const side = sides[sideIndex], points = scatterPoints(side);
    if (points.reason) throw new Error(points.reason);
    const [xa, xb] = [Math.min(x0, x1), Math.max(x0, x1)], [ya, yb] = [Math.min(y0, y1), Math.max(y0, y1)];
    const inside = [];
    for (let i = 0; i < points.n; i++) {
      if (points.x[i] >= xa && points.x[i] <= xb && points.y[i] >= ya && points.y[i] <= yb) inside.push(i);
    }
    if (points.kind === "patches") state.highlighted = new Set(inside);
    else state.highlightedPoints = new Set(inside.map((i) => points.meta[i].join(":")));
    render();
    return inside;
  }
  function clearBrush() {
    state.highlighted = new Set();
    state.highlightedPoints = new Set();
    render();
  }

  // ---------- layout ----------
  function buildSide(sideData, index) {
    const section = document.createElement("section");
    section.className = "side";
    section.dataset.side = String(index);
    section.innerHTML = `
      <h2></h2>
      <div class="views">
        <figure class="scatter-figure"><div class="plot"><span class="axis-y"></span><canvas class="scatter"></canvas></div>
          <div class="axis-x"></div><div class="view-notice scatter-note"></div>
          <div class="legend"></div><figcaption class="scatter-caption"></figcaption></figure>
        <figure><div class="pair"><canvas class="patches"></canvas><canvas class="probe" title="the probe image, unblended"></canvas></div>
          <div class="colorbar"><span class="cmin"></span><canvas></canvas><span class="cmax"></span><span class="scale-note"></span></div>
          <div class="unit"></div><div class="path-legend legend"></div>
          <div class="view-notice patch-note"></div><figcaption class="patch-caption"></figcaption></figure>
        <div class="metrics"><table></table><p class="metrics-note"></p></div>
      </div>
      <div class="info"></div>
      <details class="overview" open><summary>Model overview</summary>
        <p class="overview-caption"></p><div class="overview-patch"></div>
        <p class="overview-matrix-caption"></p><div class="overview-matrix"></div></details>
      <details class="relevance-view" open hidden><summary>Whole-model relevance</summary>
        <div class="views"><figure><canvas class="relevance"></canvas><figcaption class="relevance-caption"></figcaption></figure>
          <div class="faithfulness"><table></table></div></div>
        <p class="erf-caption"></p><div class="erf"></div></details>`;
    section.querySelector("h2").textContent = sideData.label;
    $("sides").appendChild(section);
    const q = (selector) => section.querySelector(selector);
    const side = {
      data: sideData, root: section, scatter: q("canvas.scatter"), patches: q("canvas.patches"),
      probe: q("canvas.probe"), colorbar: q(".colorbar canvas"), colorMin: q(".cmin"), colorMax: q(".cmax"),
      scaleNote: q(".scale-note"), unit: q(".unit"), legend: q(".scatter-figure .legend"),
      pathLegend: q(".path-legend"), axisX: q(".axis-x"), axisY: q(".axis-y"),
      scatterNote: q(".scatter-note"), patchNote: q(".patch-note"), scatterCaption: q(".scatter-caption"),
      patchCaption: q(".patch-caption"), metrics: q(".metrics table"), metricsNote: q(".metrics-note"),
      info: q(".info"), drag: null, overview: q(".overview-patch"), overviewCaption: q(".overview-caption"),
      overviewMatrix: q(".overview-matrix"), overviewMatrixCaption: q(".overview-matrix-caption"),
      thumbs: new Map(), relevanceView: q(".relevance-view"), relevanceCanvas: q("canvas.relevance"),
      relevanceCaption: q(".relevance-caption"), faithTable: q(".faithfulness table"), erf: q(".erf"),
      erfCaption: q(".erf-caption"),
    };
    attachScatter(side);
    attachPatches(side);
    buildOverview(side);
    buildErf(side);
    return side;
  }

  function render() {
    syncToolbar();
    for (const side of sides) side.heat = heatmap(side);
    const scales = heatScales();
    const overviews = sides.map((side) => overviewEntries(side, selectedPatch0(side)));
    sides.forEach((side, i) => {
      drawScatter(side);
      drawPatches(side, scales[i]);
      drawUnit(side);
      drawMetrics(side);
      drawOverview(side, i, overviews);
      drawRelevance(side);
    });
  }

  function reportError(message) {
    explorer.errors.push(message);
    const notice = $("notice");
    if (notice) { notice.hidden = false; notice.className = "error"; notice.textContent = `explorer error: ${message}`; }
  }

  function describe() {
    const first = data.sides[0];
    const parts = data.sides.map((s) => `${s.model || "model"} · ${s.ordering || "ordering"} (${s.scheme})`);
    $("subtitle").textContent = `${parts.join("  vs  ")} · ${first.images.n} probe image(s)`;
    $("storage").textContent = `Stored within a ${(data.budget_bytes / 1e6).toFixed(1)} MB budget.`;
    if (data.omitted.length) {
      const notice = $("notice");
      notice.hidden = false;
      notice.textContent = `Not stored (size budget; rebuild with --max-mb ${data.needed_mb} to keep them): ${data.omitted.join("; ")}`;
    }
  }

  async function start() {
    data = JSON.parse($("explorer-data").textContent);
    arrays = await decodeArrays(data.arrays, base64Bytes($("explorer-binary").textContent.trim()));
    data.sides.forEach((sideData, i) => sides.push(buildSide(sideData, i)));
    const left = sides[0];
    state.stage = left.data.stages[0];
    const first = blocksOfStage(left, state.stage)[0];
    state.block = first.block;
    state.patch = centrePatch(first);
    state.method = methodsOf(variantOf(left))[0] || data.methods[0];
    const kinds = allRelevanceKinds();
    state.relevance = kinds.includes("rollout") ? "rollout" : kinds[0] || null;
    if (data.colour) {
      logDecades = -Math.log10(data.colour.log_floor);
      state.logColor = data.colour.scale === "log";
    }
    bindToolbar();
    describe();
    render();
    explorer.readyAt = performance.now();
    explorer.ready = true;
    document.documentElement.dataset.ready = "true";
  }

  // ---------- test hook ----------
  Object.defineProperties(explorer, {
    state: {
      get: () => ({ ...state, highlighted: [...state.highlighted].sort((a, b) => a - b), highlightedPoints: [...state.highlightedPoints].sort() }),
    },
    sideCount: { get: () => sides.length },
  });
  Object.assign(explorer, {
    select, setVariant, setRoute, setImage, setMode, setMethod, clickPatch, brush, clearBrush,
    setColorBy(c) { state.colorBy = c; render(); },
    setPath(on) { setPathRoute(on ? (state.route === "merged" ? 0 : Number(state.route)) : "off"); },
    setPathRoute,
    setSharedScale(on) { state.sharedScale = Boolean(on); render(); },
    overviewValues(row, col, sideIndex = 0) {
      const side = sides[sideIndex], grid0 = finestGrid(side);
      if (!(row >= 0 && row < grid0.H && col >= 0 && col < grid0.W)) throw new Error(`patch (${row}, ${col}) is outside the ${grid0.H}x${grid0.W} stage-0 grid`);
      return overviewEntries(side, row * grid0.W + col).map((e) => ({
        stage: e.block.stage, block: e.block.block, row: e.row, col: e.col, values: e.values ? Array.from(e.values) : null,
        reason: e.reason || null,
      }));
    },
    paths(sideIndex = 0) {
      const side = sides[sideIndex], block = currentBlock(side);
      return (side.drawnPaths || []).map(({ k, route }) => ({ route: k, name: block.route_names[k], patches: Array.from(route) }));
    },
    colorScale(sideIndex = 0) { const s = sides[sideIndex].heatScale; return s ? { lo: s.lo, hi: s.hi, log: s.useLog } : null; },
    legend(sideIndex = 0) {
      const s = sides[sideIndex];
      return { scatter: s.legend.innerText, axes: [s.axisX.textContent, s.axisY.textContent], unit: s.unit.textContent,
        scale: s.scaleNote.textContent, paths: s.pathLegend.innerText, metrics: s.metricsNote.textContent };
    },
    setLogColor(on) { state.logColor = Boolean(on); render(); },
    heatmapValues(sideIndex = 0) { const h = heatmap(sides[sideIndex]); return h.values ? Array.from(h.values) : null; },
    heatmapReason(sideIndex = 0) { return heatmap(sides[sideIndex]).reason || null; },
    highlightedPatches() { return [...state.highlighted].sort((a, b) => a - b); },
    highlightedPoints() { return [...state.highlightedPoints].sort(); },
    scatterPoints(sideIndex = 0) {
      const p = scatterPoints(sides[sideIndex]);
      return p.reason ? null : { x: Array.from(p.x), y: Array.from(p.y), kind: p.kind, meta: p.meta || null };
    },
    dataToClient(sideIndex, x, y) {
      const side = sides[sideIndex], rect = side.scatter.getBoundingClientRect(), [px, py] = side.layout.toPx(x, y);
      return { x: rect.left + px, y: rect.top + py };
    },
    metrics(sideIndex = 0) { const b = currentBlock(sides[sideIndex]); return b ? Object.fromEntries(b.metrics) : null; },
    setRelevance,
    relevanceKinds(sideIndex = 0) { return relevanceKinds(sides[sideIndex]); },
    relevanceValues(image, kind, sideIndex = 0) {
      const side = sides[sideIndex], n = side.data.images.n;
      if (image !== "mean" && !(Number.isInteger(image) && image >= 0 && image < n)) throw new Error(`no image ${image}`);
      const values = relevanceMap(side, image, kind);
      return values ? Array.from(values) : null;
    },
    relevanceShown(sideIndex = 0) {
      const shown = sides[sideIndex].relevanceShown;
      return shown ? { kind: shown.kind, image: shown.image, values: Array.from(shown.values) } : null;
    },
    erfStages(sideIndex = 0) { const rel = sides[sideIndex].data.relevance; return rel && !rel.problem ? rel.erf.map((e) => e.stage) : []; },
    relevanceNote(sideIndex = 0) { return sides[sideIndex].relevanceCaption.textContent; },
    erfValues(stage, sideIndex = 0) { const e = erfMap(sides[sideIndex], stage); return e ? Array.from(e.data) : null; },
    notices(sideIndex = 0) {
      const s = sides[sideIndex];
      return { scatter: s.scatterNote.textContent, patches: s.patchNote.textContent, page: $("notice").hidden ? "" : $("notice").textContent };
    },
  });

  start().catch((error) => reportError(error && error.stack ? error.stack : String(error)));
})();
