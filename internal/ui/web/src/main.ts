// The console's entry point: a hash router (#/, #/services/<ns>/<name>,
// #/validation, #/proxies) and one poll loop. The graph is polled every 2 s
// whatever is shown (it feeds the service view's numbers too), validation
// too (the header badge), the proxy table and the open service only while
// shown.

import { api, type Graph, type GraphNode, type ProxyStatus, type Service, type Validation } from "./api";
import { byId, el } from "./dom";
import { TopologyView } from "./graph";
import { renderProxies, renderValidation } from "./panels";
import { ServiceView } from "./service";

const POLL_MS = 2000;

type Route = { view: "graph"; service?: { ns: string; name: string } } | { view: "validation" } | { view: "proxies" };

function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "services" && parts.length === 3) return { view: "graph", service: { ns: parts[1], name: parts[2] } };
  if (parts[0] === "validation") return { view: "validation" };
  if (parts[0] === "proxies") return { view: "proxies" };
  return { view: "graph" };
}

let services: Service[] = [];
let route: Route = parseRoute(location.hash);

const statusLine = byId("status-line");
const graph = new TopologyView(byId("graph"), byId<HTMLCanvasElement>("topology"), byId("tooltip"), onNodeClick);
const serviceView = new ServiceView(
  () => graph.edges(),
  () => (location.hash = "#/"),
);

function serviceOf(n: GraphNode): Service | undefined {
  return services.find((s) => (s.workloads ?? []).includes(n.id)) ?? services.find((s) => n.service !== "" && s.host === n.service);
}

function onNodeClick(n: GraphNode | null): void {
  if (!n) {
    if (route.view === "graph" && route.service) location.hash = "#/";
    else graph.select([]);
    return;
  }
  const s = serviceOf(n);
  if (s) location.hash = `#/services/${encodeURIComponent(s.namespace)}/${encodeURIComponent(s.name)}`;
  else {
    graph.select([n.id]);
    statusLine.textContent = `${n.id} is not part of a known service.`;
  }
}

// highlight selects the open service's workloads in the graph.
function highlight(): void {
  if (route.view !== "graph" || !route.service) {
    graph.select([]);
    return;
  }
  const { ns, name } = route.service;
  const s = services.find((x) => x.namespace === ns && x.name === name);
  if (!s) return;
  const ids = new Set(s.workloads ?? []);
  for (const n of graph.nodes()) if (n.service === s.host) ids.add(n.id);
  graph.select(ids);
}

function applyRoute(): void {
  route = parseRoute(location.hash);
  byId("graph-page").hidden = route.view !== "graph";
  byId("validation").hidden = route.view !== "validation";
  byId("proxies").hidden = route.view !== "proxies";
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a")) a.classList.toggle("active", a.dataset.view === route.view);
  if (route.view === "graph" && route.service) serviceView.open(route.service.ns, route.service.name);
  else serviceView.close();
  const picker = byId<HTMLSelectElement>("service-picker");
  picker.value = route.view === "graph" && route.service ? `${route.service.ns}/${route.service.name}` : "";
  highlight();
}

async function loadServices(): Promise<void> {
  services = await api<Service[]>("/api/services");
  const picker = byId<HTMLSelectElement>("service-picker");
  const want = route.view === "graph" && route.service ? `${route.service.ns}/${route.service.name}` : "";
  picker.replaceChildren(
    el("option", { value: "", text: `Open a service (${services.length})…` }),
    ...services.map((s) => el("option", { value: `${s.namespace}/${s.name}`, text: `${s.name}.${s.namespace}` })),
  );
  picker.value = want;
  highlight();
}

let timer = 0;
let polls = 0;

// poll fetches what the current view needs; scheduled again POLL_MS after
// it starts, so a slow answer never stacks requests.
async function poll(schedule = true): Promise<void> {
  if (schedule) {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => void poll(), POLL_MS);
  }
  const jobs: Promise<unknown>[] = [
    api<Graph>("/api/graph").then((g) => {
      graph.setGraph(g);
      serviceView.renderTraffic();
      if (route.view === "graph" && route.service) highlight();
      statusLine.textContent = `${g.nodes.length} nodes · ${g.edges.length} edges · ${g.windowSeconds} s window · ${new Date(g.generatedAt).toLocaleTimeString()}`;
      statusLine.className = "";
    }),
    api<Validation>("/api/validation").then(renderValidation),
  ];
  if (schedule && polls++ % 5 === 0) jobs.push(loadServices());
  if (route.view === "proxies") jobs.push(api<ProxyStatus[]>("/api/proxies").then(renderProxies));
  if (serviceView.isOpen()) jobs.push(serviceView.refresh());
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    statusLine.textContent = `API: ${failed.reason instanceof Error ? failed.reason.message : String(failed.reason)}`;
    statusLine.className = "error";
  }
}

byId<HTMLInputElement>("filter").addEventListener("input", (ev) => graph.setFilter((ev.target as HTMLInputElement).value));
byId("fit").addEventListener("click", () => graph.fit());
byId("zoom-in").addEventListener("click", () => graph.zoomBy(1.4));
byId("zoom-out").addEventListener("click", () => graph.zoomBy(1 / 1.4));
byId<HTMLSelectElement>("service-picker").addEventListener("change", (ev) => {
  const v = (ev.target as HTMLSelectElement).value;
  location.hash = v ? `#/services/${v.split("/").map(encodeURIComponent).join("/")}` : "#/";
});
window.addEventListener("hashchange", () => {
  applyRoute();
  void poll(false);
});

// A small handle for tests and the browser's console: what the graph drew
// and where, so a test can hover and click the canvas like a user.
(window as unknown as { trellisConsole: object }).trellisConsole = {
  scene: () => graph.scene(),
  nodePoint: (id: string) => graph.screenPoint("node", id),
  edgePoint: (id: string) => graph.screenPoint("edge", id),
};

applyRoute();
void poll();
