// A layered (Sugiyama-style) layout of the topology, cheap enough to run on
// every structural change at 500 services / 2000 edges in a few
// milliseconds (see the README for measurements):
//
//   1. Workloads are grouped into boxes by namespace/app, so the versions of
//      an app sit together; layering works on these groups.
//   2. Cycles are broken by reversing DFS back edges; layers are the longest
//      path from the sources (callers left, callees right).
//   3. Within a layer groups are ordered by namespace, then by a few
//      barycenter sweeps (fewer crossings), without dummy nodes: a long edge
//      pulls by its far end's relative position.
//   4. The drawing keeps about a screen's aspect ratio: a very deep graph
//      has its layers merged into fewer columns, a layer taller than the
//      aspect allows is wrapped into sub-columns (500 services must not make
//      one 30 000 px column or 200 thin ones).
//   5. Groups without any edge go in a last, wrapped column.
//
// Ties break on group keys (sorted ids), so a refresh with the same
// topology gives the same picture.

import type { GraphEdge, GraphNode } from "./api";

export const NODE_H = 20;
const NODE_GAP = 4;
const GROUP_HEADER = 18;
const GROUP_PAD = 5;
export const GROUP_W = 180;
const COL_GAP = 140;
const GROUP_GAP = 10;
const NS_GAP = 26;
const ASPECT = 16 / 9;
const SWEEPS = 4;
const CURVE_SAMPLES = 12;

export interface NodeBox {
  x: number;
  y: number;
  w: number;
  h: number;
  group: number;
}

export interface GroupBox {
  key: string;
  label: string;
  namespace: string;
  x: number;
  y: number;
  w: number;
  h: number;
  members: number[]; // indexes into the nodes array
}

// NamespaceBand labels a run of groups of one namespace within a column.
export interface NamespaceBand {
  namespace: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface EdgePath {
  edge: number; // index into the edges array
  id: string; // the edge's id, to find it again in the next refresh
  // Cubic bezier: x0 y0 c1x c1y c2x c2y x1 y1.
  c: Float32Array;
  // Polyline approximation for hit testing and its bounding box.
  pts: Float32Array;
  minX: number;
  minY: number;
  maxX: number;
  maxY: number;
}

export interface Layout {
  nodes: (NodeBox | null)[]; // parallel to the input nodes
  groups: GroupBox[];
  bands: NamespaceBand[];
  edges: EdgePath[]; // only edges whose both ends are known nodes
  width: number;
  height: number;
  ms: number;
}

export function groupKey(n: GraphNode): string {
  return n.kind === "workload" ? `${n.namespace}/${n.app || n.workload}` : `~${n.id}`;
}

export function nodeLabel(n: GraphNode): string {
  if (n.kind !== "workload") return n.id === "unknown" ? "unknown" : n.service || n.id;
  if (n.app && n.version && n.workload === `${n.app}-${n.version}`) return n.version;
  return n.workload;
}

function groupLabel(n: GraphNode): string {
  if (n.kind === "workload") return n.app || n.workload;
  if (n.kind === "unknown") return "unknown";
  return n.service ? n.service : n.id;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function layout(nodes: GraphNode[], edges: GraphEdge[]): Layout {
  const t0 = performance.now();
  const index = new Map<string, number>();
  nodes.forEach((n, i) => index.set(n.id, i));

  // 1. Groups, in key order so every later tie-break is deterministic.
  const groupOf = new Map<string, number>();
  const keys = [...new Set(nodes.map(groupKey))].sort(cmp);
  const groups: GroupBox[] = keys.map((key) => ({ key, label: "", namespace: "", x: 0, y: 0, w: GROUP_W, h: 0, members: [] }));
  keys.forEach((k, i) => groupOf.set(k, i));
  const nodeGroup = new Int32Array(nodes.length);
  nodes.forEach((n, i) => {
    const g = groupOf.get(groupKey(n))!;
    nodeGroup[i] = g;
    const gb = groups[g];
    if (gb.members.length === 0) {
      gb.label = groupLabel(n);
      gb.namespace = n.kind === "unknown" ? "" : n.namespace;
    }
    gb.members.push(i);
  });
  for (const g of groups) g.members.sort((a, b) => cmp(nodeLabel(nodes[a]), nodeLabel(nodes[b])) || cmp(nodes[a].id, nodes[b].id));
  const G = groups.length;

  // Group-level adjacency, deduplicated; self loops do not affect layering.
  const out: number[][] = Array.from({ length: G }, () => []);
  const inn: number[][] = Array.from({ length: G }, () => []);
  const seen = new Set<number>();
  for (const e of edges) {
    const s = index.get(e.source);
    const t = index.get(e.target);
    if (s === undefined || t === undefined) continue;
    const gs = nodeGroup[s];
    const gt = nodeGroup[t];
    if (gs === gt || seen.has(gs * G + gt)) continue;
    seen.add(gs * G + gt);
    out[gs].push(gt);
    inn[gt].push(gs);
  }
  for (const l of out) l.sort((a, b) => a - b);

  // 2. Break cycles: iterative DFS, an edge to a node on the stack is a
  // back edge and is reversed for layering.
  const state = new Uint8Array(G); // 0 new, 1 on stack, 2 done
  const dagOut: number[][] = Array.from({ length: G }, () => []);
  const dagIn: number[][] = Array.from({ length: G }, () => []);
  const addDag = (a: number, b: number) => {
    dagOut[a].push(b);
    dagIn[b].push(a);
  };
  // Sources first, so the reversed edges are the ones closing a loop.
  const roots = [...Array(G).keys()].sort((a, b) => inn[a].length - inn[b].length || a - b);
  for (const r of roots) {
    if (state[r]) continue;
    const stack: [number, number][] = [[r, 0]];
    state[r] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [v, i] = top;
      if (i === out[v].length) {
        state[v] = 2;
        stack.pop();
        continue;
      }
      top[1]++;
      const w = out[v][i];
      if (state[w] === 1) addDag(w, v);
      else {
        addDag(v, w);
        if (state[w] === 0) {
          state[w] = 1;
          stack.push([w, 0]);
        }
      }
    }
  }

  // Longest path layering in topological order (Kahn).
  const layerOf = new Int32Array(G);
  const indeg = new Int32Array(G);
  for (let g = 0; g < G; g++) indeg[g] = dagIn[g].length;
  const queue: number[] = [];
  for (let g = 0; g < G; g++) if (indeg[g] === 0) queue.push(g);
  for (let qi = 0; qi < queue.length; qi++) {
    const v = queue[qi];
    for (const w of dagOut[v]) {
      if (layerOf[w] < layerOf[v] + 1) layerOf[w] = layerOf[v] + 1;
      if (--indeg[w] === 0) queue.push(w);
    }
  }
  const isolated = (g: number) => out[g].length === 0 && inn[g].length === 0;
  let L = 0;
  for (let g = 0; g < G; g++) if (!isolated(g)) L = Math.max(L, layerOf[g] + 1);

  // Group sizes, and the column height that gives the whole drawing roughly
  // the screen's aspect ratio.
  for (const g of groups) g.h = GROUP_HEADER + g.members.length * (NODE_H + NODE_GAP) + GROUP_PAD - NODE_GAP;
  let total = 0;
  for (const g of groups) total += g.h + GROUP_GAP;
  const maxCol = Math.max(400, Math.sqrt((total * (GROUP_W + COL_GAP)) / ASPECT));
  // Deep call chains (long random graphs) would give hundreds of thin
  // layers: squeeze them into as many columns as that aspect allows, in
  // order, so callers stay left of callees.
  const maxLayers = Math.max(8, Math.ceil((0.6 * total) / maxCol));
  if (L > maxLayers) {
    for (let g = 0; g < G; g++) layerOf[g] = Math.floor((layerOf[g] * maxLayers) / L);
    L = maxLayers;
  }
  const layers: number[][] = Array.from({ length: L }, () => []);
  const loners: number[] = [];
  for (let g = 0; g < G; g++) (isolated(g) ? loners : layers[layerOf[g]]).push(g);

  // 3. Order within layers: namespace first, then barycenters.
  const nsRank = new Map<string, number>();
  [...new Set(groups.map((g) => g.namespace))].sort(cmp).forEach((ns, i) => nsRank.set(ns, i));
  const rel = new Float64Array(G); // relative position in its layer, 0..1
  const setRel = (layer: number[]) => layer.forEach((g, i) => (rel[g] = layer.length > 1 ? i / (layer.length - 1) : 0.5));
  const bary = new Float64Array(G);
  const sortLayer = (layer: number[]) =>
    layer.sort((a, b) => nsRank.get(groups[a].namespace)! - nsRank.get(groups[b].namespace)! || bary[a] - bary[b] || a - b);
  for (const layer of layers) {
    layer.forEach((g) => (bary[g] = 0));
    sortLayer(layer);
    setRel(layer);
  }
  const sweep = (neighbours: number[][], l: number) => {
    const layer = layers[l];
    for (const g of layer) {
      let sum = 0;
      let n = 0;
      for (const h of neighbours[g]) {
        sum += rel[h];
        n++;
      }
      bary[g] = n ? sum / n : rel[g];
    }
    sortLayer(layer);
    setRel(layer);
  };
  for (let it = 0; it < SWEEPS; it++) {
    for (let l = 1; l < L; l++) sweep(dagIn, l);
    for (let l = L - 2; l >= 0; l--) sweep(dagOut, l);
  }
  loners.sort((a, b) => nsRank.get(groups[a].namespace)! - nsRank.get(groups[b].namespace)! || a - b);
  if (loners.length) layers.push(loners);

  // 4. Wrap layers taller than maxCol into sub-columns.
  const columns: number[][] = [];
  for (const layer of layers) {
    let h = 0;
    for (const g of layer) h += groups[g].h + GROUP_GAP;
    const k = Math.max(1, Math.ceil(h / maxCol));
    const per = h / k;
    let col: number[] = [];
    let acc = 0;
    for (const g of layer) {
      if (col.length && acc + groups[g].h / 2 > per) {
        columns.push(col);
        col = [];
        acc = 0;
      }
      col.push(g);
      acc += groups[g].h + GROUP_GAP;
    }
    if (col.length) columns.push(col);
  }

  // Coordinates: columns left to right, vertically centred.
  const colHeights = columns.map((col) => {
    let h = 0;
    col.forEach((g, i) => {
      if (i > 0) h += groups[g].namespace !== groups[col[i - 1]].namespace ? NS_GAP : GROUP_GAP;
      h += groups[g].h;
    });
    return h;
  });
  const height = Math.max(0, ...colHeights) + NS_GAP;
  const bands: NamespaceBand[] = [];
  columns.forEach((col, c) => {
    const x = c * (GROUP_W + COL_GAP);
    let y = NS_GAP + (height - NS_GAP - colHeights[c]) / 2;
    let band: NamespaceBand | null = null;
    col.forEach((g, i) => {
      const gb = groups[g];
      if (i > 0) y += gb.namespace !== groups[col[i - 1]].namespace ? NS_GAP : GROUP_GAP;
      gb.x = x;
      gb.y = y;
      if (!band || band.namespace !== gb.namespace) {
        band = { namespace: gb.namespace, x: x - 6, y: y - 6, w: GROUP_W + 12, h: 0 };
        bands.push(band);
      }
      band.h = y + gb.h + 6 - band.y;
      y += gb.h;
    });
  });
  const width = columns.length ? columns.length * (GROUP_W + COL_GAP) - COL_GAP : 0;

  const boxes: (NodeBox | null)[] = new Array(nodes.length).fill(null);
  groups.forEach((gb, g) => {
    gb.members.forEach((n, k) => {
      boxes[n] = { x: gb.x + GROUP_PAD, y: gb.y + GROUP_HEADER + k * (NODE_H + NODE_GAP), w: GROUP_W - 2 * GROUP_PAD, h: NODE_H, group: g };
    });
  });

  // Edge curves: right side of the source to the left side of the target.
  const paths: EdgePath[] = [];
  edges.forEach((e, i) => {
    const s = index.get(e.source);
    const t = index.get(e.target);
    if (s === undefined || t === undefined) return;
    const a = boxes[s]!;
    const b = boxes[t]!;
    const x0 = a.x + a.w;
    const y0 = a.y + a.h / 2;
    const x1 = b.x;
    const y1 = b.y + b.h / 2;
    const dx = Math.max(50, Math.abs(x1 - x0) * 0.45);
    const lift = s === t ? -40 : 0;
    paths.push(curve(i, e.id, x0, y0, x0 + dx, y0 + lift, x1 - dx, y1 + lift, x1, y1));
  });

  return { nodes: boxes, groups, bands, edges: paths, width, height, ms: performance.now() - t0 };
}

function curve(edge: number, id: string, x0: number, y0: number, ax: number, ay: number, bx: number, by: number, x1: number, y1: number): EdgePath {
  const c = new Float32Array([x0, y0, ax, ay, bx, by, x1, y1]);
  const pts = new Float32Array((CURVE_SAMPLES + 1) * 2);
  for (let k = 0; k <= CURVE_SAMPLES; k++) {
    const t = k / CURVE_SAMPLES;
    const u = 1 - t;
    const w0 = u * u * u;
    const w1 = 3 * u * u * t;
    const w2 = 3 * u * t * t;
    const w3 = t * t * t;
    pts[2 * k] = w0 * x0 + w1 * ax + w2 * bx + w3 * x1;
    pts[2 * k + 1] = w0 * y0 + w1 * ay + w2 * by + w3 * y1;
  }
  // A bezier lies inside the hull of its control points.
  return {
    edge,
    id,
    c,
    pts,
    minX: Math.min(x0, ax, bx, x1),
    minY: Math.min(y0, ay, by, y1),
    maxX: Math.max(x0, ax, bx, x1),
    maxY: Math.max(y0, ay, by, y1),
  };
}

// distToPath is the distance from (x, y) to the edge's polyline, or
// Infinity when the point is outside its box grown by slack.
export function distToPath(p: EdgePath, x: number, y: number, slack: number): number {
  if (x < p.minX - slack || x > p.maxX + slack || y < p.minY - slack || y > p.maxY + slack) return Infinity;
  let best = Infinity;
  const pts = p.pts;
  for (let k = 0; k + 3 < pts.length; k += 2) {
    const ax = pts[k];
    const ay = pts[k + 1];
    const bx = pts[k + 2];
    const by = pts[k + 3];
    const dx = bx - ax;
    const dy = by - ay;
    const len2 = dx * dx + dy * dy;
    let t = len2 ? ((x - ax) * dx + (y - ay) * dy) / len2 : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    const ex = ax + t * dx - x;
    const ey = ay + t * dy - y;
    const d = ex * ex + ey * ey;
    if (d < best) best = d;
  }
  return Math.sqrt(best);
}
