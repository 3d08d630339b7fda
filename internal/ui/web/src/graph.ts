// The topology graph on one <canvas>: at 500 services and 2000 edges a
// DOM/SVG element per node and edge makes every pan and hover pay for
// thousands of elements; a canvas redraw costs a few milliseconds and no
// DOM. Drawing is batched by style (one path per colour/width/dash), culled
// to the viewport, and labels are only drawn when zoomed in enough to read.
//
// A refresh with the same nodes and edges only updates the numbers (no new
// layout); a structural change re-runs the layout. Neither touches the
// user's pan/zoom once they have moved the view.

import type { Graph, GraphEdge, GraphNode } from "./api";
import { distToPath, layout, nodeLabel, NODE_H, type EdgePath, type Layout, type NodeBox } from "./layout";

type Hit = { kind: "node"; i: number } | { kind: "edge"; i: number } | null;

const MIN_SCALE = 0.02;
const MAX_SCALE = 4;
const LABEL_SCALE = 0.45; // below this, labels are unreadable: skip them
const FONT = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";
const BOLD = "600 11px system-ui, -apple-system, 'Segoe UI', sans-serif";

export function edgeColour(e: GraphEdge): string {
  if (!(e.rps > 0)) return "#aab2bf";
  if (e.errorRate >= 0.05) return "#d63a3a";
  if (e.errorRate >= 0.01) return "#e09a00";
  return "#2f9e5f";
}

function edgeWidth(e: GraphEdge): number {
  if (!(e.rps > 0)) return 1;
  // Log scale, in half-pixel steps so edges batch into few styles.
  return Math.round(2 * (1 + Math.min(5, Math.log10(1 + e.rps) * 1.6))) / 2;
}

function edgeDash(e: GraphEdge): number[] {
  if (e.mtls === "mutual_tls") return [];
  if (e.mtls === "mixed") return [2, 3];
  return [6, 4];
}

export function fmtRate(rps: number): string {
  if (rps >= 100) return rps.toFixed(0);
  if (rps >= 10) return rps.toFixed(1);
  return rps.toFixed(2);
}

export function fmtPct(f: number): string {
  return (f * 100).toFixed(f >= 0.1 || f === 0 ? 0 : 1) + " %";
}

export function fmtMs(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) + " ms" : ms.toFixed(1) + " ms";
}

export function edgeSummary(e: GraphEdge): string {
  if (e.protocol === "tcp") {
    const bps = e.bytesPerSecond ?? 0;
    return `${fmtRate(e.rps)} conn/s · ${bps >= 1024 ? (bps / 1024).toFixed(1) + " KiB/s" : bps.toFixed(0) + " B/s"}`;
  }
  return `${fmtRate(e.rps)} rps · ${fmtPct(e.errorRate)} err · p99 ${fmtMs(e.p99Ms)}`;
}

export class TopologyView {
  private graph: Graph = { generatedAt: "", windowSeconds: 0, nodes: [], edges: [] };
  private lay: Layout | null = null;
  private structure = "";
  private ctx: CanvasRenderingContext2D;
  private dpr = 1;
  private cssW = 0;
  private cssH = 0;
  // View transform: screen = world * scale + (tx, ty), in CSS pixels.
  private scale = 1;
  private tx = 0;
  private ty = 0;
  private userMoved = false;
  private hover: Hit = null;
  private selected = new Set<string>(); // node ids
  private filter = "";
  private labelCache = new Map<string, string>();
  private drawQueued = false;
  private pendingLayoutMs = 0; // structure diff + layout of the data not drawn yet
  private fresh = false; // new data since the last draw
  private updates = 0; // answers of /api/graph shown so far
  private drag: { x: number; y: number; tx: number; ty: number; moved: boolean } | null = null;
  private firstDrawDone = false;

  constructor(
    private readonly host: HTMLElement, // #graph
    private readonly canvas: HTMLCanvasElement, // #topology
    private readonly tooltip: HTMLElement,
    private readonly onSelect: (n: GraphNode | null) => void,
  ) {
    this.ctx = canvas.getContext("2d", { alpha: false })!;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
    canvas.addEventListener("wheel", (ev) => this.onWheel(ev), { passive: false });
    canvas.addEventListener("mousedown", (ev) => this.onDown(ev));
    window.addEventListener("mousemove", (ev) => this.onMove(ev));
    window.addEventListener("mouseup", (ev) => this.onUp(ev));
    canvas.addEventListener("mouseleave", () => {
      if (!this.drag) this.setHover(null, 0, 0);
    });
  }

  // setGraph shows a new answer of /api/graph.
  setGraph(g: Graph): void {
    const t0 = performance.now();
    const structure = structureKey(g);
    if (structure !== this.structure || !this.lay) {
      this.lay = layout(g.nodes, g.edges);
      this.structure = structure;
      this.hover = null;
      if (!this.userMoved) this.fitView();
    } else {
      remap(this.lay, this.graph, g);
    }
    this.graph = g;
    this.pendingLayoutMs = performance.now() - t0;
    this.fresh = true;
    this.updates++;
    this.host.dataset.layoutMs = this.lay.ms.toFixed(1);
    this.requestDraw();
  }

  // scene is what the last layout placed: node ids and edges with their
  // current numbers (for tests and the browser console).
  scene(): { nodes: string[]; edges: GraphEdge[] } {
    const l = this.lay;
    if (!l) return { nodes: [], edges: [] };
    return {
      nodes: this.graph.nodes.filter((_, i) => l.nodes[i]).map((n) => n.id),
      edges: l.edges.map((p) => this.graph.edges[p.edge]),
    };
  }

  // screenPoint is where a node's centre (or an edge's middle) is drawn,
  // in client coordinates; null when unknown or off screen.
  screenPoint(kind: "node" | "edge", id: string): { x: number; y: number } | null {
    const l = this.lay;
    if (!l) return null;
    let wx: number;
    let wy: number;
    if (kind === "node") {
      const i = this.graph.nodes.findIndex((n) => n.id === id);
      const b = i >= 0 ? l.nodes[i] : null;
      if (!b) return null;
      wx = b.x + b.w / 2;
      wy = b.y + b.h / 2;
    } else {
      const p = l.edges.find((q) => q.id === id);
      if (!p) return null;
      const mid = (p.pts.length / 2) | 0;
      wx = p.pts[mid - (mid % 2)];
      wy = p.pts[mid - (mid % 2) + 1];
    }
    const r = this.canvas.getBoundingClientRect();
    const x = r.left + wx * this.scale + this.tx;
    const y = r.top + wy * this.scale + this.ty;
    return x >= r.left && x <= r.right && y >= r.top && y <= r.bottom ? { x, y } : null;
  }

  nodes(): GraphNode[] {
    return this.graph.nodes;
  }

  edges(): GraphEdge[] {
    return this.graph.edges;
  }

  // select highlights these nodes (and their edges); empty clears.
  select(ids: Iterable<string>): void {
    this.selected = new Set(ids);
    this.requestDraw();
  }

  setFilter(text: string): void {
    this.filter = text.trim().toLowerCase();
    this.requestDraw();
  }

  fit(): void {
    this.userMoved = false;
    this.fitView();
    this.requestDraw();
  }

  zoomBy(f: number): void {
    this.zoomAt(this.cssW / 2, this.cssH / 2, f);
  }

  private fitView(): void {
    const l = this.lay;
    if (!l || !this.cssW || !this.cssH) return;
    const pad = 30;
    const w = Math.max(1, l.width);
    const h = Math.max(1, l.height);
    this.scale = clamp(Math.min((this.cssW - 2 * pad) / w, (this.cssH - 2 * pad) / h, 1.5), MIN_SCALE, MAX_SCALE);
    this.tx = (this.cssW - w * this.scale) / 2;
    this.ty = (this.cssH - h * this.scale) / 2;
  }

  private resize(): void {
    const r = this.canvas.getBoundingClientRect();
    this.dpr = window.devicePixelRatio || 1;
    this.cssW = r.width;
    this.cssH = r.height;
    this.canvas.width = Math.max(1, Math.round(r.width * this.dpr));
    this.canvas.height = Math.max(1, Math.round(r.height * this.dpr));
    if (!this.userMoved) this.fitView();
    this.requestDraw();
  }

  private requestDraw(): void {
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => {
      this.drawQueued = false;
      this.draw();
    });
  }

  private matches(n: GraphNode): boolean {
    return !this.filter || n.id.toLowerCase().includes(this.filter) || n.service.toLowerCase().includes(this.filter);
  }

  // focus is the set of nodes the picture is about right now (hovered or
  // selected), or null when nothing is: everything else is drawn faded.
  private focus(): { nodes: Set<number>; edges: Set<number> } | null {
    const g = this.graph;
    const l = this.lay;
    if (!l) return null;
    const nodes = new Set<number>();
    const edges = new Set<number>();
    const idx = new Map<string, number>();
    g.nodes.forEach((n, i) => idx.set(n.id, i));
    const seeds = new Set<number>();
    for (const id of this.selected) {
      const i = idx.get(id);
      if (i !== undefined) seeds.add(i);
    }
    if (this.hover?.kind === "node") seeds.add(this.hover.i);
    if (this.hover?.kind === "edge") {
      const e = g.edges[l.edges[this.hover.i].edge];
      edges.add(this.hover.i);
      nodes.add(idx.get(e.source)!);
      nodes.add(idx.get(e.target)!);
    }
    if (!seeds.size && !edges.size) return null;
    for (const s of seeds) nodes.add(s);
    l.edges.forEach((p, k) => {
      const e = g.edges[p.edge];
      const s = idx.get(e.source)!;
      const t = idx.get(e.target)!;
      if (seeds.has(s) || seeds.has(t)) {
        edges.add(k);
        nodes.add(s);
        nodes.add(t);
      }
    });
    return { nodes, edges };
  }

  private draw(): void {
    const t0 = performance.now();
    const l = this.lay;
    const ctx = this.ctx;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = "#f7f8fa";
    ctx.fillRect(0, 0, this.cssW, this.cssH);
    if (!l) return;
    const g = this.graph;
    const s = this.scale;
    ctx.setTransform(this.dpr * s, 0, 0, this.dpr * s, this.dpr * this.tx, this.dpr * this.ty);
    // The visible world rectangle, for culling.
    const vx0 = -this.tx / s;
    const vy0 = -this.ty / s;
    const vx1 = vx0 + this.cssW / s;
    const vy1 = vy0 + this.cssH / s;
    const visible = (x: number, y: number, w: number, h: number) => x + w >= vx0 && x <= vx1 && y + h >= vy0 && y <= vy1;
    const labels = s >= LABEL_SCALE;
    const focus = this.focus();
    const filtered = this.filter !== "";

    // Namespace bands and app groups.
    ctx.lineWidth = 1 / s;
    for (const b of l.bands) {
      if (!visible(b.x, b.y, b.w, b.h)) continue;
      ctx.fillStyle = nsColour(b.namespace, 0.07);
      ctx.fillRect(b.x, b.y, b.w, b.h);
    }
    if (labels) {
      ctx.font = BOLD;
      ctx.fillStyle = "#56607a";
      for (const b of l.bands) {
        if (b.namespace && visible(b.x, b.y - 14, b.w, 14)) ctx.fillText(b.namespace, b.x + 2, b.y - 4);
      }
    }
    ctx.strokeStyle = "#c9d1dd";
    ctx.fillStyle = "#ffffff";
    ctx.beginPath();
    for (const gb of l.groups) if (visible(gb.x, gb.y, gb.w, gb.h)) ctx.rect(gb.x, gb.y, gb.w, gb.h);
    ctx.fill();
    ctx.stroke();
    if (labels) {
      ctx.font = BOLD;
      ctx.fillStyle = "#27314a";
      for (const gb of l.groups) if (visible(gb.x, gb.y, gb.w, 16)) ctx.fillText(this.ellipsize(gb.label, gb.w - 10, BOLD), gb.x + 5, gb.y + 13);
    }

    // Edges, batched by style; faded ones first so the focused draw on top.
    const batches = new Map<string, EdgePath[]>();
    let drawnEdges = 0;
    l.edges.forEach((p, k) => {
      drawnEdges++;
      if (p.maxX < vx0 || p.minX > vx1 || p.maxY < vy0 || p.minY > vy1) return;
      const e = g.edges[p.edge];
      const faded = focus ? !focus.edges.has(k) : false;
      const key = `${faded ? 0 : 1}|${edgeColour(e)}|${edgeWidth(e)}|${edgeDash(e).join(",")}`;
      let b = batches.get(key);
      if (!b) batches.set(key, (b = []));
      b.push(p);
    });
    const keys = [...batches.keys()].sort();
    for (const key of keys) {
      const [faded, colour, width, dash] = key.split("|");
      const paths = batches.get(key)!;
      ctx.globalAlpha = faded === "0" ? 0.12 : 0.85;
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      ctx.lineWidth = Math.max(Number(width), 0.6 / s);
      ctx.setLineDash(dash ? dash.split(",").map(Number) : []);
      ctx.beginPath();
      for (const p of paths) {
        const c = p.c;
        ctx.moveTo(c[0], c[1]);
        ctx.bezierCurveTo(c[2], c[3], c[4], c[5], c[6], c[7]);
      }
      ctx.stroke();
      if (s > 0.15) {
        ctx.setLineDash([]);
        ctx.beginPath();
        for (const p of paths) arrowHead(ctx, p, 4 + Number(width));
        ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);

    // Nodes.
    let drawnNodes = 0;
    const hovered = this.hover?.kind === "node" ? this.hover.i : -1;
    const health = inboundHealth(g);
    g.nodes.forEach((n, i) => {
      const b = l.nodes[i];
      if (!b) return;
      drawnNodes++;
      if (!visible(b.x, b.y, b.w, b.h)) return;
      const faded = (focus && !focus.nodes.has(i)) || (filtered && !this.matches(n));
      ctx.globalAlpha = faded ? 0.3 : 1;
      ctx.fillStyle = n.kind === "workload" ? "#eef3fb" : n.kind === "service" ? "#f6efe2" : "#ececec";
      ctx.fillRect(b.x, b.y, b.w, b.h);
      const sel = this.selected.has(n.id);
      ctx.strokeStyle = sel ? "#1d5fd1" : i === hovered ? "#27314a" : nsColour(n.namespace, 1);
      ctx.lineWidth = (sel ? 2.5 : i === hovered ? 2 : 1) / Math.min(1, s);
      ctx.strokeRect(b.x, b.y, b.w, b.h);
      ctx.fillStyle = health.get(n.id) ?? "#c4cad4";
      ctx.beginPath();
      ctx.arc(b.x + 8, b.y + b.h / 2, 3.5, 0, 2 * Math.PI);
      ctx.fill();
      if (labels) {
        ctx.font = FONT;
        ctx.fillStyle = "#1b2236";
        ctx.fillText(this.ellipsize(nodeLabel(n), b.w - 22, FONT), b.x + 16, b.y + NODE_H / 2 + 4);
      }
    });
    ctx.globalAlpha = 1;

    // Numbers on the focused edges (a bounded set: one node's edges).
    if (focus && focus.edges.size <= 60 && s >= 0.3) {
      ctx.font = FONT;
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      for (const k of focus.edges) {
        const p = l.edges[k];
        const mid = (p.pts.length / 2) | 0;
        const x = p.pts[mid - (mid % 2)] * s + this.tx;
        const y = p.pts[mid - (mid % 2) + 1] * s + this.ty;
        const text = edgeSummary(g.edges[p.edge]);
        const w = ctx.measureText(text).width;
        ctx.fillStyle = "rgba(255,255,255,0.9)";
        ctx.fillRect(x - w / 2 - 3, y - 9, w + 6, 14);
        ctx.fillStyle = "#1b2236";
        ctx.fillText(text, x - w / 2, y + 2);
      }
    }

    const drawMs = performance.now() - t0;
    const h = this.host.dataset;
    h.nodes = String(drawnNodes);
    h.edges = String(drawnEdges);
    h.drawMs = drawMs.toFixed(1);
    h.view = `${this.scale.toFixed(4)},${this.tx.toFixed(1)},${this.ty.toFixed(1)}`;
    h.updates = String(this.updates);
    if (this.fresh) {
      // A full render: new data diffed, laid out if needed, and drawn.
      h.renderMs = (drawMs + this.pendingLayoutMs).toFixed(1);
      this.fresh = false;
      this.pendingLayoutMs = 0;
    }
    if (!this.firstDrawDone && g.generatedAt !== "") {
      this.firstDrawDone = true;
      h.firstRenderMs = performance.now().toFixed(0);
      document.body.dataset.ready = "1";
    }
  }

  // ellipsize truncates text to width with an ellipsis, cached per label.
  private ellipsize(text: string, width: number, font: string): string {
    const key = `${font}|${width}|${text}`;
    let v = this.labelCache.get(key);
    if (v !== undefined) return v;
    this.ctx.font = font;
    v = text;
    if (this.ctx.measureText(v).width > width) {
      while (v.length > 1 && this.ctx.measureText(v + "…").width > width) v = v.slice(0, -1);
      v += "…";
    }
    if (this.labelCache.size > 20000) this.labelCache.clear();
    this.labelCache.set(key, v);
    return v;
  }

  private toWorld(ev: MouseEvent): [number, number, number, number] {
    const r = this.canvas.getBoundingClientRect();
    const sx = ev.clientX - r.left;
    const sy = ev.clientY - r.top;
    return [(sx - this.tx) / this.scale, (sy - this.ty) / this.scale, sx, sy];
  }

  private hitTest(x: number, y: number): Hit {
    const l = this.lay;
    if (!l) return null;
    for (let i = 0; i < l.nodes.length; i++) {
      const b = l.nodes[i];
      if (b && x >= b.x && x <= b.x + b.w && y >= b.y && y <= b.y + b.h) return { kind: "node", i };
    }
    const slack = 5 / this.scale;
    let best = -1;
    let bestD = slack;
    l.edges.forEach((p, k) => {
      const d = distToPath(p, x, y, slack);
      if (d <= bestD) {
        bestD = d;
        best = k;
      }
    });
    return best >= 0 ? { kind: "edge", i: best } : null;
  }

  private onWheel(ev: WheelEvent): void {
    ev.preventDefault();
    const [, , sx, sy] = this.toWorld(ev);
    const delta = ev.deltaMode === 1 ? ev.deltaY * 16 : ev.deltaY;
    this.zoomAt(sx, sy, Math.exp(-delta * 0.0015));
  }

  private zoomAt(sx: number, sy: number, f: number): void {
    const next = clamp(this.scale * f, MIN_SCALE, MAX_SCALE);
    const k = next / this.scale;
    this.tx = sx - (sx - this.tx) * k;
    this.ty = sy - (sy - this.ty) * k;
    this.scale = next;
    this.userMoved = true;
    this.requestDraw();
  }

  private onDown(ev: MouseEvent): void {
    if (ev.button !== 0) return;
    this.drag = { x: ev.clientX, y: ev.clientY, tx: this.tx, ty: this.ty, moved: false };
    this.canvas.classList.add("dragging");
  }

  private onMove(ev: MouseEvent): void {
    const d = this.drag;
    if (d) {
      const dx = ev.clientX - d.x;
      const dy = ev.clientY - d.y;
      if (!d.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      d.moved = true;
      this.tx = d.tx + dx;
      this.ty = d.ty + dy;
      this.userMoved = true;
      this.tooltip.hidden = true;
      this.requestDraw();
      return;
    }
    if (ev.target !== this.canvas) return;
    const [x, y, sx, sy] = this.toWorld(ev);
    this.setHover(this.hitTest(x, y), sx, sy);
  }

  private onUp(ev: MouseEvent): void {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    this.canvas.classList.remove("dragging");
    if (d.moved || ev.target !== this.canvas) return;
    const [x, y] = this.toWorld(ev);
    const hit = this.hitTest(x, y);
    this.onSelect(hit?.kind === "node" ? this.graph.nodes[hit.i] : null);
  }

  private setHover(hit: Hit, sx: number, sy: number): void {
    const same = hit?.kind === this.hover?.kind && hit?.i === this.hover?.i;
    this.hover = hit;
    if (!hit) {
      this.tooltip.hidden = true;
    } else {
      this.tooltip.textContent = this.describe(hit);
      this.tooltip.hidden = false;
      const tw = this.tooltip.offsetWidth;
      this.tooltip.style.left = `${Math.min(sx + 14, this.cssW - tw - 4)}px`;
      this.tooltip.style.top = `${sy + 14}px`;
    }
    this.canvas.style.cursor = hit?.kind === "node" ? "pointer" : "";
    if (!same) this.requestDraw();
  }

  private describe(hit: NonNullable<Hit>): string {
    const g = this.graph;
    if (hit.kind === "node") {
      const n = g.nodes[hit.i];
      let rps = 0;
      for (const e of g.edges) if (e.target === n.id) rps += e.rps;
      const lines = [n.kind === "workload" ? `${n.workload} (${n.namespace})` : n.id];
      if (n.app) lines.push(`app ${n.app}${n.version ? ", version " + n.version : ""}`);
      if (n.service) lines.push(n.service);
      lines.push(`inbound ${fmtRate(rps)} rps`);
      return lines.join("\n");
    }
    const e = g.edges[this.lay!.edges[hit.i].edge];
    return `${e.source} → ${e.target}\n${e.protocol} · ${edgeSummary(e)}\nmTLS: ${e.mtls}`;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

// structureKey changes exactly when the layout must: the set of node ids
// (with their grouping) and of edge endpoints.
function structureKey(g: Graph): string {
  const n = g.nodes.map((x) => `${x.id}\u0001${x.app}\u0001${x.kind}`).sort();
  const e = g.edges.map((x) => `${x.source}\u0001${x.target}\u0001${x.id}`).sort();
  return n.join("\u0002") + "\u0003" + e.join("\u0002");
}

// remap points a layout made for prev at next's arrays: same ids, perhaps
// in another order.
function remap(l: Layout, prev: Graph, next: Graph): void {
  const boxes = new Map<string, NodeBox | null>();
  prev.nodes.forEach((n, i) => boxes.set(n.id, l.nodes[i]));
  l.nodes = next.nodes.map((n) => boxes.get(n.id) ?? null);
  const edgeIdx = new Map<string, number>();
  next.edges.forEach((e, i) => edgeIdx.set(e.id, i));
  for (const p of l.edges) p.edge = edgeIdx.get(p.id)!;
}

function arrowHead(ctx: CanvasRenderingContext2D, p: EdgePath, size: number): void {
  const c = p.c;
  let dx = c[6] - c[4];
  let dy = c[7] - c[5];
  const len = Math.hypot(dx, dy) || 1;
  dx /= len;
  dy /= len;
  const x = c[6];
  const y = c[7];
  ctx.moveTo(x, y);
  ctx.lineTo(x - dx * size - dy * size * 0.5, y - dy * size + dx * size * 0.5);
  ctx.lineTo(x - dx * size + dy * size * 0.5, y - dy * size - dx * size * 0.5);
  ctx.closePath();
}

// inboundHealth colours each node by its worst inbound edge with traffic.
function inboundHealth(g: Graph): Map<string, string> {
  const worst = new Map<string, GraphEdge>();
  for (const e of g.edges) {
    if (!(e.rps > 0)) continue;
    const w = worst.get(e.target);
    if (!w || e.errorRate > w.errorRate) worst.set(e.target, e);
  }
  const out = new Map<string, string>();
  for (const [id, e] of worst) out.set(id, edgeColour(e));
  return out;
}

const nsPalette = ["#4c78a8", "#9c6ade", "#e45756", "#54a24b", "#b279a2", "#ff9da6", "#9d755d", "#72b7b2", "#eeca3b", "#f58518"];

function nsColour(ns: string, alpha: number): string {
  let h = 0;
  for (let i = 0; i < ns.length; i++) h = (h * 31 + ns.charCodeAt(i)) >>> 0;
  const hex = nsPalette[h % nsPalette.length];
  if (alpha >= 1) return hex;
  const r = parseInt(hex.slice(1, 3), 16);
  const gg = parseInt(hex.slice(3, 5), 16);
  const b = parseInt(hex.slice(5, 7), 16);
  return `rgba(${r},${gg},${b},${alpha})`;
}
