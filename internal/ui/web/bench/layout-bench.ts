// Times layout() on a synthetic topology (500 services, 2000 edges, same
// shape as the Go browser test's): `npm run layout-bench`. The browser
// tests report the whole render in Chromium; this isolates the layout.
import type { GraphEdge, GraphNode } from "../src/api";
import { layout } from "../src/layout";

function synthetic(services: number, edges: number): { nodes: GraphNode[]; edges: GraphEdge[] } {
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const nodes: GraphNode[] = [];
  for (let s = 0; s < services; s++) {
    const ns = `ns-${s % 10}`;
    const app = `svc-${s}`;
    for (const v of s % 10 === 0 ? ["v1", "v2"] : ["v1"]) {
      nodes.push({ id: `${ns}/${app}-${v}`, namespace: ns, workload: `${app}-${v}`, app, version: v, service: `${app}.${ns}.svc.cluster.local`, kind: "workload" });
    }
  }
  const out: GraphEdge[] = [];
  const seen = new Set<string>();
  while (out.length < edges) {
    const a = nodes[rnd(nodes.length)];
    const b = nodes[rnd(nodes.length)];
    if (a === b || seen.has(a.id + ">" + b.id)) continue;
    seen.add(a.id + ">" + b.id);
    out.push({ id: `${a.id}>${b.id}`, source: a.id, target: b.id, protocol: "http", rps: rnd(1000) / 10, errorRate: rnd(10) / 100, p99Ms: rnd(500) / 10, mtls: "mutual_tls" });
  }
  return { nodes, edges: out };
}

for (const [s, e] of [
  [50, 200],
  [500, 2000],
  [1000, 5000],
]) {
  const g = synthetic(s, e);
  layout(g.nodes, g.edges); // warm up the JIT
  const runs = 20;
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(layout(g.nodes, g.edges).ms);
  times.sort((a, b) => a - b);
  const l = layout(g.nodes, g.edges);
  console.log(
    `layout ${s} services (${g.nodes.length} nodes) / ${e} edges: median ${times[runs >> 1].toFixed(2)} ms, max ${times[runs - 1].toFixed(2)} ms; drawing ${l.width.toFixed(0)}x${l.height.toFixed(0)} px, ${l.groups.length} groups`,
  );
}
