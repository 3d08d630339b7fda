// The validation messages and the proxy sync table: plain DOM lists that
// are rebuilt from each poll (a few hundred rows at most; cheap at 2 s).

import type { ProxyStatus, Validation } from "./api";
import { byId, el } from "./dom";

const XDS_TYPES = ["CDS", "LDS", "EDS", "RDS"];

export function renderValidation(v: Validation): void {
  const msgs = v.messages ?? [];
  const errors = msgs.filter((m) => m.level === "error").length;
  const badge = byId("validation-count");
  badge.textContent = msgs.length ? String(msgs.length) : "";
  badge.className = errors ? "badge error" : msgs.length ? "badge warning" : "badge";
  byId("validation-summary").textContent = v.ok
    ? msgs.length
      ? `The config is valid, with ${msgs.length} warning${msgs.length === 1 ? "" : "s"}.`
      : "The config is valid."
    : `The latest config was rejected (${errors} error${errors === 1 ? "" : "s"}); the last good config keeps serving.`;
  byId("validation-list").replaceChildren(
    ...msgs.map((m) =>
      el(
        "li",
        { class: `validation-message ${m.level}`, "data-level": m.level, "data-source": m.source },
        el("span", { class: "level", text: m.level }),
        " ",
        el("code", { text: m.text }),
      ),
    ),
  );
}

export function renderProxies(list: ProxyStatus[]): void {
  byId("proxies-summary").textContent = `${list.length} prox${list.length === 1 ? "y" : "ies"}, ${
    list.filter((p) => p.connected).length
  } connected, ${list.filter((p) => XDS_TYPES.some((t) => p.types?.[t] && p.types[t].status !== "SYNCED")).length} not in sync.`;
  byId("proxies-body").replaceChildren(
    ...list.map((p) =>
      el(
        "tr",
        { class: "proxy-row", "data-id": p.id },
        el("td", {}, el("b", { text: `${p.name}.${p.namespace}` }), el("div", { class: "muted id", text: p.id })),
        el("td", { class: p.connected ? "ok" : "bad", text: p.connected ? "connected" : "disconnected", title: p.connectedAt }),
        ...XDS_TYPES.map((t) => {
          const s = p.types?.[t];
          if (!s) return el("td", { class: "muted", text: "–" });
          return el("td", {
            class: `sync ${s.status === "SYNCED" ? "ok" : s.status === "STALE" ? "bad" : "muted"}`,
            "data-type": t,
            text: s.status,
            title: `sent ${s.sent || "–"}, acked ${s.acked || "–"}`,
          });
        }),
        el("td", { class: p.lastNack ? "bad" : "muted", text: p.lastNack ? `${p.lastNack.type}: ${p.lastNack.message}` : "–", title: p.lastNack?.at }),
        el("td", { class: p.lastError ? "bad" : "muted", text: p.lastError || "–" }),
      ),
    ),
  );
}
