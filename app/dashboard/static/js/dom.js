// DOM helpers. Every string goes in as text (textContent / text nodes), never as HTML:
// keys and values typed by anyone in the audience are shown exactly as typed.

const SAFE_ATTRS = new Set(["id", "title", "role", "for", "type", "value", "href", "colspan", "datetime", "aria-label", "aria-hidden", "lang"]);

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "style") Object.assign(node.style, v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (SAFE_ATTRS.has(k) || k.startsWith("data-")) node.setAttribute(k, String(v));
      else throw new Error(`el(): attribute ${k} is not allowed`);
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else if (c instanceof Node) node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function setChildren(node, ...children) {
  clear(node);
  append(node, children);
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

// A JSON value as one line of text (strings shown with their quotes, so "1" and 1 differ).
export function showValue(v, max = 400) {
  let s;
  try {
    s = JSON.stringify(v);
  } catch (e) {
    s = String(v);
  }
  if (s === undefined) s = String(v);
  return s.length > max ? s.slice(0, max) + "…" : s;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "–";
  if (Math.abs(ms) >= 10000) return (ms / 1000).toFixed(1) + " s";
  if (Math.abs(ms) >= 1000) return (ms / 1000).toFixed(2) + " s";
  return Math.round(ms) + " ms";
}

export function fmtClock(ms) {
  if (!isFinite(ms)) return "–";
  return (ms / 1000).toFixed(3) + " s";
}

export function fmtCount(n) {
  if (n === undefined || n === null) return "0";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

let toastTimer = null;
export function toast(message, ok = false) {
  const t = $("toast");
  t.textContent = message;
  t.classList.toggle("ok", ok);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, ok ? 2500 : 5000);
}
