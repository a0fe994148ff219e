// The timeline's bar under the map: play/pause, the mode, the scrubber with its marks (writes,
// partitions, crashes), the time, the replay speed, Live, Export and Load; and the PNG button of
// the convergence chart. It drives the controller (timeline.js) and draws its state.

import { $, el, setChildren, fmtClock } from "../dom.js";
import { saveConvergencePng } from "./export.js";
import { MAX_MARKS } from "./recording.js";

export const REPLAY_SPEEDS = [0.1, 0.25, 0.5, 1, 2, 4, 8];

export class TimelineBar {
  constructor(tl) {
    this.tl = tl;
    this.marksDrawn = -1;
    this.ui = this.build(tl);
  }

  showError(msg) {
    const box = this.ui.error;
    box.textContent = msg || "";
    box.hidden = !msg;
  }

  build(tl) {
    const root = $("timeline");
    const play = el("button", { type: "button", class: "btn tl-play", "data-testid": "timeline-play", title: "freeze the view here; the cluster runs on (space)" });
    const mode = el("span", { class: "tl-mode", "data-testid": "timeline-mode", role: "status", text: "Live" });
    const scrub = el("input", { type: "range", class: "tl-scrub", "data-testid": "timeline-scrub", "aria-label": "virtual time", value: "0" });
    scrub.min = "0"; scrub.max = "0"; scrub.step = "any";
    const marks = el("div", { class: "tl-marks", "aria-hidden": "true" });
    const track = el("div", { class: "tl-track" }, marks, scrub);
    const time = el("span", { class: "tl-time", "data-testid": "timeline-time", text: "–" });
    const speed = el("select", { class: "tl-speed", "data-testid": "timeline-speed", "aria-label": "replay speed", title: "replay speed: 1× is the pace it was recorded at" },
      REPLAY_SPEEDS.map((s) => el("option", { value: String(s), text: s + "×" })));
    speed.value = "1";
    const live = el("button", { type: "button", class: "btn tl-live", "data-testid": "timeline-live", text: "Live", title: "back to the live cluster" });
    const exp = el("button", { type: "button", class: "btn", "data-testid": "timeline-export", text: "Export", title: "save the recorded run as a file" });
    const file = el("input", { type: "file", class: "tl-file", "data-testid": "timeline-import", "aria-label": "load a recorded run" });
    file.accept = "application/json,.json";
    const load = el("label", { class: "btn tl-load", title: "replay a saved run, offline" }, "Load…", file);
    const error = el("div", { class: "tl-error", "data-testid": "timeline-error", role: "alert" });
    error.hidden = true;
    if (root) setChildren(root, el("div", { class: "tl-row" }, play, mode, track, time, speed, live, exp, load), error);

    play.addEventListener("click", () => tl.toggleView());
    scrub.addEventListener("pointerdown", () => { tl.dragging = true; });
    const release = () => {
      if (!tl.dragging) return;
      tl.dragging = false;
      tl.rebase();
      tl.loop();
    };
    scrub.addEventListener("pointerup", release);
    scrub.addEventListener("pointercancel", release);
    scrub.addEventListener("input", () => tl.scrub(Number(scrub.value)));
    scrub.addEventListener("change", () => { release(); tl.scrub(Number(scrub.value)); });
    speed.addEventListener("change", () => tl.setFactor(Number(speed.value)));
    live.addEventListener("click", () => tl.goLive());
    exp.addEventListener("click", () => tl.exportRun());
    file.addEventListener("change", async () => {
      const f = file.files && file.files[0];
      if (f) await tl.importFile(f);
      file.value = "";
    });
    const png = $("convergence-png");
    if (png) png.addEventListener("click", () => {
      saveConvergencePng(tl.S, $("conv-chart")).catch((e) => {
        console.warn(e);
        this.showError("could not save the chart: " + e.message);
      });
    });
    // the space bar is the page's keyboard handler's (keys.js), which calls tl.toggleView()
    return { root, play, mode, scrub, marks, time, speed, live, exp, file, error };
  }

  render() {
    const tl = this.tl;
    const u = this.ui;
    const rec = tl.rec;
    const replay = tl.mode === "replay";
    u.mode.textContent = replay ? "Replay" : tl.lost ? "Disconnected" : "Live";
    u.mode.className = "tl-mode " + (replay ? "tl-mode-replay" : "tl-mode-live");
    if (u.root) u.root.classList.toggle("tl-replaying", replay);
    const mapCard = u.root && u.root.closest(".map-card");
    if (mapCard) {
      mapCard.classList.toggle("replaying", replay);
      const h = u.root.offsetHeight + "px";
      if (mapCard.style.getPropertyValue("--timeline-h") !== h) mapCard.style.setProperty("--timeline-h", h);
    }
    // "Freeze view", not "Pause": the toolbar's Pause simulation stops the cluster, this only the view
    u.play.textContent = replay && !tl.playing ? "▶ Play" : "❚❚ Freeze view";
    u.live.disabled = !replay && tl.source === "live";
    u.live.classList.toggle("btn-good", replay);
    u.exp.disabled = rec.empty;
    if (rec.empty) {
      u.time.textContent = "waiting for the stream";
      u.scrub.disabled = true;
      return;
    }
    u.scrub.disabled = false;
    const start = rec.start, end = tl.edge();
    const now = replay ? tl.replayNow() : end;
    u.scrub.min = String(start);
    u.scrub.max = String(Math.max(end, start + 1));
    if (!tl.dragging && tl.pendingSeek === null) u.scrub.value = String(now);
    const src = tl.source === "file" ? " · from file" : replay ? ` · ${fmtClock(end - now)} behind live` : "";
    u.time.textContent = `${fmtClock(now)} of ${fmtClock(start)}–${fmtClock(end)}${src}`;
    this.renderMarks(start, end);
  }

  renderMarks(start, end) {
    const marks = this.tl.rec.marks;
    const key = marks.length + ":" + Math.round(start / 250) + ":" + Math.round(end / 1000);
    if (key === this.marksDrawn) return;
    this.marksDrawn = key;
    const span = Math.max(1, end - start);
    const shown = marks.filter((m) => m[0] >= start).slice(-MAX_MARKS);
    setChildren(this.ui.marks, shown.map((m) => el("span", {
      class: "tl-mark tl-mark-" + m[1], title: `${fmtClock(m[0])} ${m[2]}`,
      style: { left: `${(100 * (m[0] - start)) / span}%` },
    })));
  }
}
