// The side panel for the selected POP: what it holds (registers with their siblings side by
// side, then every other type's keys, each drawn by its type's entry in types.js) and its
// version vector, entries that differ from other replicas lit.

import { $, el, setChildren } from "./dom.js";
import { otherTypes, rowOf, typeOf } from "./types.js";

const NOT_LISTS = new Set(["node", "status", "digest", "version_vector", "keys", "truncated"]);

export function renderHeader(S) {
  const id = S.selected;
  const status = $("pop-status");
  if (!id || !S.pops[id]) {
    $("pop-title").textContent = "Click a POP on the map";
    setChildren($("pop-meta"), "or pick one above, then write to it: the write is answered there, and spreads.");
    status.textContent = "";
    status.className = "pill";
    return;
  }
  const pop = S.pops[id];
  const st = S.replicas[id] || {};
  $("pop-title").textContent = `${pop.city} · ${id}`;
  const up = st.status !== "down";
  status.textContent = up ? "up" : "crashed";
  status.className = "pill " + (up ? "up" : "down");
  const colour = S.colours.of(st.digest);
  setChildren(
    $("pop-meta"),
    el("span", { text: pop.region }),
    el("span", { class: "digest-chip", title: "state digest: equal digests, equal state" },
      el("span", { class: "digest-dot", style: { background: colour, color: colour } }),
      (st.digest || "").slice(0, 10)),
    el("span", { text: `${st.keys ?? 0} keys` }),
    st.incarnation ? el("span", { text: `incarnation ${st.incarnation}` }) : null,
  );
  $("crash").disabled = !up;
  $("recover").disabled = up;
}

// The detail lists keys by namespace; a namespace's rows go under Registers or the other CRDTs.
function rowsOf(d, inKv, onPickKey) {
  const rows = [];
  for (const [ns, entries] of Object.entries(d)) {
    if (NOT_LISTS.has(ns) || !Array.isArray(entries)) continue;
    const t = typeOf(ns);
    if (((t || {}).section === "kv") !== inKv) continue;
    for (const entry of entries) {
      const row = rowOf(ns, entry);
      if (t) row.addEventListener("click", () => onPickKey(ns, entry.key));
      rows.push(row);
    }
  }
  return rows;
}

export function renderDetail(S, d, onPickKey) {
  const kv = $("kv-list"), crdt = $("crdt-list");
  if (!d || d.node !== S.selected) {
    setChildren(kv, el("div", { class: "empty", text: S.selected ? "loading…" : "no POP selected" }));
    setChildren(crdt);
    return;
  }
  const registers = rowsOf(d, true, onPickKey);
  setChildren(kv, registers.length ? registers : [el("div", { class: "empty", text: "no registers here yet" })]);
  const rows = rowsOf(d, false, onPickKey);
  if (d.truncated) rows.push(el("div", { class: "empty", text: `…and ${d.truncated} more keys` }));
  setChildren(crdt, rows.length ? rows : [el("div", { class: "empty", text: `no ${otherTypes()} here yet` })]);
}

export function renderVV(S) {
  const table = $("vv-table");
  const id = S.selected;
  if (!id || !S.replicas[id]) { setChildren(table); return; }
  const mine = S.replicas[id].version_vector || {};
  const others = Object.values(S.replicas).filter((r) => r.node !== id && r.status !== "down");
  const actors = new Set(Object.keys(mine));
  for (const r of others) for (const a of Object.keys(r.version_vector || {})) actors.add(a);
  const sorted = [...actors].sort();
  const head = el("tr", null, el("th", { text: "actor" }), el("th", { text: "here" }), el("th", { text: "others" }));
  const body = sorted.map((a) => {
    const here = mine[a] || 0;
    const vals = others.map((r) => (r.version_vector || {})[a] || 0);
    const lo = vals.length ? Math.min(...vals) : here, hi = vals.length ? Math.max(...vals) : here;
    const differs = lo !== here || hi !== here;
    return el("tr", { class: differs ? "differs" : "", "data-actor": a },
      el("td", { text: a }), el("td", { text: String(here) }), el("td", { text: lo === hi ? String(lo) : `${lo}–${hi}` }));
  });
  if (!body.length) body.push(el("tr", null, el("td", { colspan: 3, class: "empty", text: "no writes yet: every entry is 0" })));
  setChildren(table, el("thead", null, head), el("tbody", null, body));
}
