// The service view: a service's workloads with their live traffic (from the
// graph), its VirtualService routes with a weight editor, and its
// DestinationRule subsets. Saving PUTs the weights of one http route; the
// server validates the whole config with the change and writes it back to
// the resource's source, answering the updated VirtualService or the
// validation error, which #service-status shows verbatim.

import { api, ApiError, type GraphEdge, type HTTPRoute, type ServiceDetail, type VirtualService } from "./api";
import { byId, el } from "./dom";
import { fmtMs, fmtPct, fmtRate } from "./graph";

export class ServiceView {
  private readonly panel = byId("service-view");
  private readonly title = byId("service-title");
  private readonly body = byId("service-body");
  private readonly status = byId("service-status");
  private current: { ns: string; name: string } | null = null;
  private detail: ServiceDetail | null = null;
  private edited = new Set<string>(); // "vsns/vsname/http" with unsaved input
  private seq = 0;

  constructor(
    private readonly edges: () => GraphEdge[],
    onClose: () => void,
  ) {
    byId("service-close").addEventListener("click", onClose);
    this.body.addEventListener("input", (ev) => {
      const t = ev.target as HTMLElement;
      if (t.classList.contains("weight")) {
        this.edited.add(`${t.dataset.vs}/${t.dataset.http}`);
        this.updateSums();
      }
    });
    this.body.addEventListener("click", (ev) => {
      const b = (ev.target as HTMLElement).closest("button.save-weights") as HTMLButtonElement | null;
      if (b) void this.save(b.dataset.vs!, Number(b.dataset.http));
    });
  }

  isOpen(): boolean {
    return this.current !== null;
  }

  // open shows namespace/name; reopening the same service keeps edits.
  open(ns: string, name: string): void {
    if (this.current?.ns === ns && this.current.name === name) return;
    this.current = { ns, name };
    this.detail = null;
    this.edited.clear();
    this.status.textContent = "";
    this.status.className = "";
    this.title.textContent = `${name}.${ns}`;
    this.body.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    this.panel.hidden = false;
    void this.refresh();
  }

  close(): void {
    this.current = null;
    this.detail = null;
    this.panel.hidden = true;
  }

  // refresh re-reads the service, unless the user is editing weights: a
  // poll must never overwrite what they are typing.
  async refresh(): Promise<void> {
    const cur = this.current;
    if (!cur) return;
    const seq = ++this.seq;
    try {
      const d = await api<ServiceDetail>(`/api/services/${enc(cur.ns)}/${enc(cur.name)}`);
      if (seq !== this.seq || this.current !== cur) return;
      this.detail = d;
      if (this.edited.size === 0 && !(document.activeElement instanceof HTMLInputElement && this.body.contains(document.activeElement))) this.render();
      else this.renderTraffic();
    } catch (err) {
      if (seq !== this.seq || this.current !== cur) return;
      if (!this.detail) this.body.replaceChildren(el("p", { class: "error", text: message(err) }));
    }
  }

  // renderTraffic only updates the numbers table (safe while editing).
  renderTraffic(): void {
    const old = this.body.querySelector("#service-traffic");
    if (old && this.detail) old.replaceWith(this.trafficTable());
  }

  private render(): void {
    const d = this.detail;
    if (!d) return;
    const svc = d.service;
    const ports = (svc.ports ?? []).map((p) => `${p.number}/${p.name || "-"} ${p.protocol}`).join(", ");
    const vss = d.virtualServices ?? [];
    const drs = d.destinationRules ?? [];
    this.body.replaceChildren(
      el("p", { class: "host" }, el("code", { text: svc.host }), ports ? ` · ${ports}` : ""),
      el("h3", { text: "Workloads" }),
      this.trafficTable(),
      el("h3", { text: "Routes" }),
      vss.length ? el("div", {}, ...vss.map((vs) => this.vsBlock(vs))) : el("p", { class: "muted", text: "No VirtualService routes this service: requests are balanced over all its endpoints." }),
      el("h3", { text: "Subsets" }),
      drs.length
        ? el(
            "ul",
            { class: "subsets" },
            ...drs.flatMap((dr) =>
              (dr.subsets ?? []).map((s) =>
                el(
                  "li",
                  {},
                  el("b", { text: s.name }),
                  " ",
                  Object.entries(s.labels ?? {})
                    .map(([k, v]) => `${k}=${v}`)
                    .join(", "),
                  el("span", { class: "muted", text: `  DestinationRule ${dr.namespace}/${dr.name} · ${dr.source}` }),
                ),
              ),
            ),
          )
        : el("p", { class: "muted", text: "No DestinationRule." }),
    );
    this.updateSums();
  }

  private trafficTable(): HTMLElement {
    const svc = this.detail!.service;
    const wl = svc.workloads ?? [];
    const per = new Map<string, { rps: number; err: number; p99: number }>();
    let total = 0;
    for (const e of this.edges()) {
      if (!wl.includes(e.target)) continue;
      const m = per.get(e.target) ?? { rps: 0, err: 0, p99: 0 };
      m.err += e.errorRate * e.rps;
      m.rps += e.rps;
      m.p99 = Math.max(m.p99, e.p99Ms);
      per.set(e.target, m);
      total += e.rps;
    }
    return el(
      "table",
      { id: "service-traffic", class: "grid" },
      el("thead", {}, el("tr", {}, ...["workload", "rps", "share", "errors", "p99"].map((h) => el("th", { text: h })))),
      el(
        "tbody",
        {},
        ...wl.map((w) => {
          const m = per.get(w) ?? { rps: 0, err: 0, p99: 0 };
          return el(
            "tr",
            { "data-workload": w },
            el("td", { text: w }),
            el("td", { class: "num", text: fmtRate(m.rps) }),
            el("td", { class: "num", text: total > 0 ? fmtPct(m.rps / total) : "–" }),
            el("td", { class: "num", text: m.rps > 0 ? fmtPct(m.err / m.rps) : "–" }),
            el("td", { class: "num", text: m.rps > 0 ? fmtMs(m.p99) : "–" }),
          );
        }),
      ),
    );
  }

  private vsBlock(vs: VirtualService): HTMLElement {
    const key = `${vs.namespace}/${vs.name}`;
    return el(
      "section",
      { class: "vs", "data-vs": key },
      el("h4", {}, `VirtualService ${key}`, el("span", { class: "muted", text: `  ${vs.source}` })),
      !vs.editable && el("p", { class: "muted", text: "Read-only: its source cannot be written back." }),
      ...(vs.http ?? []).map((r) => this.routeBlock(vs, r)),
    );
  }

  private routeBlock(vs: VirtualService, r: HTTPRoute): HTMLElement {
    const key = `${vs.namespace}/${vs.name}`;
    const dests = r.route ?? [];
    const title = `http[${r.index}]${r.name ? " " + r.name : ""}: ${r.match || "all other requests"}`;
    return el(
      "div",
      { class: "route" },
      el("div", { class: "route-title", text: title }),
      el(
        "table",
        { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", { text: "destination" }), el("th", { text: "weight %" }))),
        el(
          "tbody",
          {},
          ...dests.map((d, i) =>
            el(
              "tr",
              {},
              el("td", { text: `${d.host}${d.subset ? " · " + d.subset : ""}${d.port ? ":" + d.port : ""}` }),
              el(
                "td",
                {},
                el("input", {
                  type: "number",
                  class: "weight",
                  min: 0,
                  max: 100,
                  step: 1,
                  value: d.weight,
                  "data-vs": key,
                  "data-http": r.index,
                  "data-dest": i,
                  "aria-label": `weight of ${d.host} ${d.subset}`,
                  disabled: !vs.editable,
                }),
              ),
            ),
          ),
        ),
      ),
      el(
        "div",
        { class: "route-actions" },
        el("span", { class: "sum", "data-vs": key, "data-http": r.index }),
        el("button", { class: "save-weights", "data-vs": key, "data-http": r.index, disabled: !vs.editable || dests.length === 0, text: "Save weights" }),
      ),
    );
  }

  private inputs(vs: string, http: number): HTMLInputElement[] {
    return [...this.body.querySelectorAll<HTMLInputElement>("input.weight")]
      .filter((i) => i.dataset.vs === vs && Number(i.dataset.http) === http)
      .sort((a, b) => Number(a.dataset.dest) - Number(b.dataset.dest));
  }

  private updateSums(): void {
    for (const s of this.body.querySelectorAll<HTMLElement>("span.sum")) {
      const sum = this.inputs(s.dataset.vs!, Number(s.dataset.http)).reduce((a, i) => a + (Number(i.value) || 0), 0);
      s.textContent = `sum ${sum}`;
      s.classList.toggle("bad", sum !== 100);
    }
  }

  private async save(vs: string, http: number): Promise<void> {
    const weights = this.inputs(vs, http).map((i) => Number(i.value));
    const [ns, name] = vs.split("/");
    this.status.className = "pending";
    this.status.textContent = `Saving VirtualService ${vs} http[${http}]…`;
    try {
      const updated = await api<VirtualService>(`/api/virtualservices/${enc(ns)}/${enc(name)}/http/${http}/weights`, {
        method: "PUT",
        body: JSON.stringify({ weights }),
      });
      if (this.detail) {
        this.detail.virtualServices = (this.detail.virtualServices ?? []).map((v) => (v.namespace === ns && v.name === name ? updated : v));
      }
      this.edited.delete(`${vs}/${http}`);
      const route = (updated.http ?? []).find((r) => r.index === http);
      const summary = (route?.route ?? []).map((d) => `${d.subset || d.host} ${d.weight}`).join(", ");
      this.status.className = "ok";
      this.status.textContent = `Saved VirtualService ${vs} http[${http}]: ${summary} (written to ${updated.source}).`;
      if (this.edited.size === 0) this.render();
    } catch (err) {
      this.status.className = "error";
      this.status.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : `Could not save: ${message(err)}`;
    }
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
