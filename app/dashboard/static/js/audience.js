// The audience on the big screen: the /join QR code and URL in a corner, and the hall's running
// total (data-testid="audience-total"). Shown in audience mode (serve --audience) or with ?join=1.
// It follows the light stream /ws/join (the totals only), not the /ws firehose. Strings from the
// server are set with textContent.

function make(tag, attrs, text) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text != null) n.textContent = text;
  return n;
}

export async function initAudience() {
  let session = null;
  try {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    session = r.ok ? await r.json() : null;
  } catch (e) {
    session = null;
  }
  const wanted = new URLSearchParams(location.search).get("join") === "1";
  if (!wanted && !(session && session.audience)) return;
  let info;
  try {
    const r = await fetch("/api/join/info", { credentials: "same-origin" });
    if (!r.ok) return;
    info = await r.json();
  } catch (e) {
    return;
  }
  const box = make("aside", { class: "audience-join", "data-testid": "audience-join", "aria-label": "join from your phone" });
  const img = make("img", { src: "/join/qr.svg", alt: "QR code: " + info.url, "data-testid": "audience-qr", width: "180", height: "180" });
  const url = make("div", { class: "audience-url", "data-testid": "audience-url" }, info.url);
  const total = make("div", { class: "audience-total", "data-testid": "audience-total", title: "votes from the hall" }, "0");
  const label = make("div", { class: "audience-label" }, "votes");
  const close = make("button", { type: "button", class: "audience-close", "aria-label": "hide the join code" }, "×");
  close.addEventListener("click", () => { box.hidden = true; });
  box.append(close, img, url, total, label);
  document.body.appendChild(box);
  follow(total);
}

function follow(total) {
  let backoff = 500;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const open = () => {
    const ws = new WebSocket(`${proto}//${location.host}/ws/join`);
    ws.addEventListener("open", () => { backoff = 500; });
    ws.addEventListener("message", (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.totals && m.totals.replica != null) total.textContent = String(m.totals.votes);
    });
    ws.addEventListener("close", () => {
      setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 10000);
    });
  };
  open();
}
