// The HTTP API, as the page uses it. Errors come back as {"error": {"code", "message"}}.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// One path segment: percent-encode everything, dots included, so "." and ".." stay keys.
export function seg(s) {
  return encodeURIComponent(String(s)).replace(/\./g, "%2E");
}

export async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  // a change made on a session cookie must say it comes from this page (web/sessions.py: CSRF)
  if (method !== "GET" && method !== "HEAD") init.headers["X-Edgestate-CSRF"] = "1";
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", "the server did not answer: " + e.message);
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (!res.ok) {
    const err = data && data.error;
    throw new ApiError(res.status, err ? err.code : "http_" + res.status, err ? err.message : `${method} ${path}: HTTP ${res.status}`);
  }
  return data;
}

export const api = {
  session: () => call("GET", "/api/session"),
  partition: (groups) => call("POST", "/api/faults/partition", { groups }),
  heal: () => call("DELETE", "/api/faults/partition"),
  crash: (id, loseState) => call("POST", `/api/replicas/${seg(id)}/crash`, { lose_state: !!loseState }),
  recover: (id) => call("POST", `/api/replicas/${seg(id)}/recover`),
  strategy: (strategy) => call("PUT", "/api/sim/strategy", { strategy }),
  speed: (speed) => call("PUT", "/api/sim/speed", { speed }),
  loss: (loss) => call("PUT", "/api/sim/loss", { loss }),
  pause: () => call("POST", "/api/sim/pause"),
  resume: () => call("POST", "/api/sim/resume"),
  step: (ms) => call("POST", "/api/sim/step", { ms }),
  reset: () => call("POST", "/api/reset"),
};
