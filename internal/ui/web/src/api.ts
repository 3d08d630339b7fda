// The console API's JSON shapes (docs/console.md, CONSOLE_API) and the one
// fetch helper every view uses. Errors come back as {"error": "..."}; the
// helper turns them into an ApiError carrying the status and that text, so a
// view can show the server's words (a 422's file:line message) unchanged.

export interface GraphNode {
  id: string;
  namespace: string;
  workload: string;
  app: string;
  version: string;
  service: string;
  kind: "workload" | "service" | "unknown";
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  protocol: string;
  rps: number;
  errorRate: number;
  p99Ms: number;
  mtls: string;
  bytesPerSecond?: number;
}

export interface Graph {
  generatedAt: string;
  windowSeconds: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface ServicePort {
  number: number;
  name: string;
  protocol: string;
}

export interface Service {
  namespace: string;
  name: string;
  host: string;
  ports: ServicePort[] | null;
  workloads: string[] | null;
}

export interface RouteDestination {
  host: string;
  subset: string;
  port: number;
  weight: number;
}

export interface HTTPRoute {
  index: number;
  name: string;
  match: string;
  route: RouteDestination[] | null;
}

export interface VirtualService {
  namespace: string;
  name: string;
  source: string;
  editable: boolean;
  http: HTTPRoute[] | null;
}

export interface DestinationRule {
  namespace: string;
  name: string;
  source: string;
  subsets: { name: string; labels: Record<string, string> | null }[] | null;
}

export interface ServiceDetail {
  service: Service;
  virtualServices: VirtualService[] | null;
  destinationRules: DestinationRule[] | null;
}

export interface ValidationMessage {
  level: "error" | "warning";
  source: string;
  resource: string;
  field: string;
  reason: string;
  text: string;
}

export interface Validation {
  ok: boolean;
  messages: ValidationMessage[] | null;
}

export interface TypeStatus {
  sent: string;
  acked: string;
  status: string;
}

export interface ProxyStatus {
  id: string;
  name: string;
  namespace: string;
  connectedAt: string;
  connected: boolean;
  types: Record<string, TypeStatus> | null;
  lastNack: { type: string; message: string; at: string } | null;
  lastError: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

// api fetches path and decodes its JSON. A non-2xx answer becomes an
// ApiError with the server's "error" text (or the status line if the body
// has none); a network failure keeps fetch's own error.
export async function api<T>(path: string, init?: RequestInit): Promise<T> {
  const resp = await fetch(path, {
    ...init,
    headers: { Accept: "application/json", ...(init?.body ? { "Content-Type": "application/json" } : {}) },
    cache: "no-store",
  });
  const text = await resp.text();
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: fall through with the raw text for the error case.
  }
  if (!resp.ok) {
    const msg =
      body && typeof body === "object" && typeof (body as { error?: unknown }).error === "string"
        ? (body as { error: string }).error
        : `${resp.status} ${resp.statusText}${text ? ": " + text.slice(0, 200) : ""}`;
    throw new ApiError(resp.status, msg);
  }
  return body as T;
}
