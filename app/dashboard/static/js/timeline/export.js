// Saving files from the page: a download link for a blob or data URL, a file name made of
// anything, and the convergence chart as a PNG for a slide.

import { fmtClock } from "../dom.js";

export function download(href, name) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

export function slug(s) {
  return String(s).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 48) || "run";
}

// Plotly reads trace names and titles as a little HTML: user keys go in as entities.
function plotlyText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// The convergence chart as a PNG a presenter can put on a slide: dark background, a title that
// says what it shows (scenario or keys, virtual time, strategy) and a legend naming each write.
export async function saveConvergencePng(S, gd) {
  const shown = [...S.writes.values()].slice(-Math.max(1, Math.floor((gd.data || []).length / 2)));
  const names = shown.map((w) => `${w.label} @${w.origin}`);
  const data = (gd.data || []).map((tr, i) => ({
    ...tr,
    name: i % 2 === 0 ? plotlyText(names[i / 2] || "write") : "physical limit",
    showlegend: i % 2 === 0 || i === 1,
  }));
  if (data[1]) data[1] = { ...data[1], line: { ...data[1].line, color: "#9fb0c8" } , name: "physical limit (one direct hop)" };
  const scenario = S.scenario && (S.scenario.name || S.scenario) || document.body.dataset.scenario || "";
  const keys = [...new Set(shown.map((w) => (w.keys[0] ? w.keys[0][1] : "?")).reverse())];
  let what = scenario ? String(scenario) : keys.length ? keys.slice(0, 3).join(", ") + (keys.length > 3 ? ` +${keys.length - 3} more` : "") : "no writes";
  if (what.length > 90) what = what.slice(0, 89) + "…";
  const t = S.clock.now();
  const strategy = S.settings ? S.settings.strategy : "";
  const replay = S.timeline && S.timeline.mode === "replay" ? " · replay" : "";
  const layout = {
    ...gd.layout,
    width: 1200, height: 600,
    paper_bgcolor: "#0f1829", plot_bgcolor: "#0f1829",
    margin: { l: 70, r: 30, t: 70, b: 60 },
    showlegend: true,
    legend: { orientation: "h", x: 0, y: -0.18, font: { size: 12 } },
    title: {
      text: plotlyText(`edgestate · convergence: ${what}`) +
        `<br><span style="font-size:12px">share of ${S.ids.length} replicas holding each write over virtual time · t = ${fmtClock(t)}${strategy ? " · " + plotlyText(strategy) : ""}${replay}</span>`,
      x: 0.01, xanchor: "left", font: { size: 18, color: "#e6edf7" },
    },
  };
  delete layout.autosize;
  const url = await Plotly.toImage({ data, layout }, { format: "png", width: 1200, height: 600, scale: 2 });
  const name = `edgestate-convergence-${slug(what)}-t${(t / 1000).toFixed(1)}s.png`;
  download(url, name);
  return name;
}
