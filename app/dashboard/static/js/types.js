// The page's one place per CRDT type: how the write form writes a key of it, and how the side
// panel shows one. The server's registry (replication/crdts) decides which types exist; a type
// this file does not know still shows in the panel (its summary as JSON). Adding a type to the
// page is one entry in TYPES. Keys and values reach the DOM as text only (dom.js).

import { el, showValue } from "./dom.js";
import { call, seg } from "./api.js";

const path = (id, ns, key) => `/api/replicas/${seg(id)}/${ns}/${seg(key)}`;
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

// What someone typed: JSON when it parses, else the text itself.
export function parseLoose(text) {
  const s = text.trim();
  if (s === "") return text;
  try {
    return JSON.parse(s);
  } catch (e) {
    return text;
  }
}

function wholeNumber(raw) {
  const n = raw.trim() === "" ? 1 : Number(raw);
  if (!Number.isInteger(n)) throw new Error("a counter changes by a whole number");
  return n;
}

function keyLine(kind, key, ...more) {
  return el("div", { class: "kv-key" }, el("span", { class: "kind", text: kind }), key, ...more);
}

function siblingChip(s) {
  return el("div", { class: "sibling" },
    el("span", { class: "sib-value", text: showValue(s.value) }),
    el("span", { class: "sib-origin", text: `written at ${s.replica} · #${s.counter}` }));
}

// Each type: `label` and `plural` (what people call it), `ops` (the form's operations: `verb`, the value
// input's `hint`, whether it takes a `field`, whether it is `numeric`, or takes `noValue`),
// `write(id, key, verb, field, raw)` (the request), `answered(id, r)` (what the answer says),
// `row(entry)` (a key of it in the panel, from the detail's summary), and `check(entry, path, v)`
// (what `row` relies on, for a summary read from a timeline file: `v` holds the file
// validator's obj/str/num/arr/actor, each throwing with the path). `section: "kv"` puts its
// rows under Registers; every other type goes under the other CRDTs.
export const TYPES = {
  kv: {
    label: "register",
    plural: "registers",
    section: "kv",
    ops: [{ verb: "value", name: "write", hint: "value (JSON or text)" }],
    write: (id, key, _verb, _field, raw) => call("PUT", path(id, "kv", key), { value: parseLoose(raw), context: null }),
    answered: (id, r) => `${id} answered at once: ${plural(r.values.length, "value", "values")} for this key`,
    row(r) {
      const conflict = r.siblings.length > 1;
      return el("div", { class: "kv-row" + (conflict ? " conflict" : ""), "data-testid": "kv-row", title: "click to write this key" },
        keyLine("kv", r.key, conflict ? el("span", { class: "sib-count", text: `  ${r.siblings.length} siblings` }) : null),
        el("div", { class: "siblings" }, r.siblings.map(siblingChip)));
    },
    check(r, p, v) {
      v.arr(r.siblings, `${p}.siblings`, 10000).forEach((s, j) => {
        v.obj(s, `${p}.siblings[${j}]`);
        v.actor(s.replica, `${p}.siblings[${j}].replica`);
        v.num(s.counter, `${p}.siblings[${j}].counter`);
      });
    },
  },
  counters: {
    label: "counter",
    plural: "counters",
    ops: [{ verb: "add", hint: "amount, e.g. 1 or -3", numeric: true }],
    write: (id, key, _verb, _field, raw) => call("POST", path(id, "counters", key), { add: wholeNumber(raw) }),
    answered: (id, r) => `${id} answered at once: the counter reads ${r.value} there`,
    row: (c) => el("div", { class: "kv-row", "data-testid": "counter-row" },
      keyLine("counter", c.key),
      el("div", { class: "counter-value", text: String(c.value) })),
    check: (c, p, v) => v.num(c.value, `${p}.value`),
  },
  sets: {
    label: "set",
    plural: "sets",
    ops: [{ verb: "add", hint: "element (JSON or text)" }, { verb: "remove", hint: "element (JSON or text)" }],
    write: (id, key, verb, _field, raw) => call("POST", path(id, "sets", key), { [verb]: [parseLoose(raw)] }),
    answered: (id, r) => `${id} answered at once: ${plural(r.members.length, "member", "members")} there`,
    row(s) {
      const more = s.size > s.members.length ? el("span", { class: "member", text: `+${s.size - s.members.length} more` }) : null;
      return el("div", { class: "kv-row", "data-testid": "set-row" },
        keyLine("set", s.key, el("span", { class: "kind", text: `  ${s.size}` })),
        el("div", { class: "members" }, s.members.map((m) => el("span", { class: "member", text: showValue(m) })), more));
    },
    check(s, p, v) {
      v.arr(s.members, `${p}.members`, 100000);
      v.num(s.size, `${p}.size`);
    },
  },
  maps: {
    label: "map",
    plural: "maps",
    ops: [
      { verb: "set", hint: "value (JSON or text)", field: true },
      { verb: "add", hint: "amount, e.g. 1 or -3", field: true, numeric: true },
      { verb: "remove", field: true, noValue: true },
    ],
    write(id, key, verb, field, raw) {
      if (!field) throw new Error("give a field");
      const body = verb === "remove" ? { remove: [field] }
        : { [verb]: { [field]: verb === "add" ? wholeNumber(raw) : parseLoose(raw) } };
      return call("POST", path(id, "maps", key), body);
    },
    answered: (id, r) => `${id} answered at once: ${plural(Object.keys(r.fields).length, "field", "fields")} there`,
    row(m) {
      const more = m.size > Object.keys(m.fields).length
        ? el("span", { class: "member", text: `+${m.size - Object.keys(m.fields).length} more fields` }) : null;
      const fields = Object.entries(m.fields).map(([name, value]) => {
        const all = Object.hasOwn(m.conflicts, name) ? m.conflicts[name] : null; // a field may be named "constructor"
        return el("div", { class: "map-field" + (all ? " conflict" : ""), "data-testid": "map-field", "data-field": name },
          el("span", { class: "field-name", text: name }),
          all ? all.map((v) => el("span", { class: "member sibling-value", text: showValue(v) }))
            : el("span", { class: "member", text: showValue(value) }));
      });
      return el("div", { class: "kv-row" + (Object.keys(m.conflicts).length ? " conflict" : ""), "data-testid": "map-row" },
        keyLine("map", m.key, el("span", { class: "kind", text: `  ${plural(m.size, "field", "fields")}` })),
        el("div", { class: "map-fields" }, fields, more));
    },
    check(m, p, v) {
      v.obj(m.fields, `${p}.fields`);
      v.obj(m.conflicts, `${p}.conflicts`);
      for (const [name, all] of Object.entries(m.conflicts)) v.arr(all, `${p}.conflicts.${name}`, 100000);
      v.num(m.size, `${p}.size`);
    },
  },
};

// A key of a type this page has no entry for: its summary, as JSON.
function fallbackRow(ns, entry) {
  const { key, ...rest } = entry;
  return el("div", { class: "kv-row", "data-testid": "crdt-row" }, keyLine(ns, key),
    el("div", { class: "members" }, el("span", { class: "member", text: showValue(rest) })));
}

// The page's entry for a namespace, or null (own entries only: a name from the stream or a
// file, such as "__proto__", never finds something else).
export function typeOf(ns) {
  return Object.hasOwn(TYPES, ns) ? TYPES[ns] : null;
}

// The types drawn under the other CRDTs (all but the registers), as a list: "counters, sets or maps".
export function otherTypes(and = "or") {
  const names = Object.values(TYPES).filter((t) => t.section !== "kv").map((t) => t.plural);
  return names.length > 1 ? `${names.slice(0, -1).join(", ")} ${and} ${names[names.length - 1]}` : names.join("");
}

export function labelOf(ns) {
  const t = typeOf(ns);
  return t ? t.label : ns;
}

export function rowOf(ns, entry) {
  const t = typeOf(ns);
  return t ? t.row(entry) : fallbackRow(ns, entry);
}
