// The timeline: the page records every message of the live stream (the snapshot and every
// batch) against virtual time, and can show any recorded moment again. Pause, scrub back,
// replay at any speed (as in RaftScope), return to live; export a run as a JSON file and load
// it back to replay it offline, with no server and no network (a talk on a plane).
//
// How a moment is shown again: the page's own handlers (app.js: onSnapshot and handle) are fed
// a keyframe (a snapshot the recorder keeps every few seconds of virtual time, built from the
// stream itself) and then the recorded events up to that moment, without animating the past.
// Replay then feeds the following events as the replay clock passes them, so messages fly again.
//
// Nothing from a loaded file is evaluated or parsed as HTML: it is validated field by field,
// and every string reaches the DOM as text.
//
// The parts (timeline/): model.js, the stream's model that makes keyframes; recording.js, the
// recorder; runfile.js, the file format and its validator; export.js, saving files; bar.js, the
// bar's UI. This module is the controller: what the page shows (live or a recorded moment), the
// replay clock, and loading and exporting runs.

import { $ } from "./dom.js";
import { clearLog } from "./convergence.js";
import { TimelineBar } from "./timeline/bar.js";
import { download, slug } from "./timeline/export.js";
import { Recording, sameIds } from "./timeline/recording.js";
import { MAX_FILE_BYTES, RunFileError, validateRun } from "./timeline/runfile.js";

export { REPLAY_SPEEDS } from "./timeline/bar.js";
export { saveConvergencePng } from "./timeline/export.js";
export { Recording } from "./timeline/recording.js";
export { FORMAT, RunFileError, VERSION, validateRun } from "./timeline/runfile.js";

export class Timeline {
  // apply(ev): the page's own handler for one stream message (a promise for a snapshot);
  // connect(): open the live stream; disconnect(): close it.
  constructor({ S, apply, connect, disconnect }) {
    this.S = S;
    this.applyFn = apply;
    this.connectFn = connect;
    this.disconnectFn = disconnect;
    this.rec = new Recording();
    this.mode = "live"; // or "replay"
    this.lost = false; // the stream closed and has not sent a snapshot since (the bar says so)
    this.source = "live"; // or "file"
    this.offline = false;
    this.fileName = "";
    this.playing = false;
    this.dragging = false;
    this.factor = 1;
    this.cursor = 0; // next sequence number to feed in replay
    this.rclock = { base: 0, at: performance.now() };
    this.recSpeed = 1;
    this.clockTaken = false;
    this.queue = Promise.resolve();
    this.pendingSeek = null;
    this.raf = null;
    this.bar = new TimelineBar(this);
    setInterval(() => this.render(), 200);
  }

  // -- the stream ----------------------------------------------------------------------------

  serial(fn) {
    const p = this.queue.then(fn);
    this.queue = p.catch((e) => console.error("timeline:", e));
    return p;
  }

  // a message from /ws: record it; show it if the page is live
  receive(batch) {
    return this.serial(async () => {
      if (this.offline) return;
      for (const ev of batch) {
        if (ev && ev.kind === "snapshot") {
          if (["topology", "server"].includes(this.rec.snapshot(ev, true))) {
            // the server now runs other POPs, or is another server (restarted): its clock and
            // events start afresh, so a new recording, and the page goes live
            this.rec = new Recording();
            this.rec.snapshot(ev, true);
            if (this.mode === "replay") this.toLiveMode();
          }
        }
      }
      this.rec.ingest(batch, true);
      if (this.mode !== "live") return;
      for (const ev of batch) await this.feedOne(ev);
    }).catch(() => {}); // logged by serial(); the stream goes on
  }

  async feedOne(ev) {
    try {
      if (ev.kind === "snapshot" && this.S.topo && !sameIds(this.S.topo, ev.topology)) this.retireMap();
      // the map marks the flights it drops: it gets copies, the recording stays as received
      if (ev.kind === "scenario") this.S.scenario = { name: ev.name, status: ev.status };
      const r = this.applyFn(ev.kind === "sent" ? { ...ev } : ev.kind === "snapshot" ? structuredClone(ev) : ev);
      if (r && typeof r.then === "function") await r;
    } catch (e) {
      console.error("could not handle", ev && ev.kind, e);
    }
  }

  // the map was drawn for other POPs: stop it, so that the next snapshot draws a new one
  retireMap() {
    const S = this.S;
    if (S.map) {
      S.map.ready = false;
      S.map.frame = () => {};
      S.map.flights.clear();
    }
    S.topo = null;
    if (S.selected) S.selected = null;
  }

  // -- the replay clock ------------------------------------------------------------------------

  edge() {
    return this.source === "file" ? this.rec.end : this.rec.liveNow();
  }

  replayNow() {
    const c = this.rclock;
    if (!this.playing || this.dragging || this.mode !== "replay") return c.base;
    return Math.min(this.edge(), c.base + (performance.now() - c.at) * this.factor * this.recSpeed);
  }

  rebase(t) {
    this.rclock = { base: t === undefined ? this.replayNow() : t, at: performance.now() };
  }

  // While replaying, the page's SimClock tells the replay's time: the map flies messages and
  // the chart draws on it. Clock messages fed from the recording give the recorded speed.
  takeClock(t) {
    const c = this.S.clock;
    this.rebase(t);
    if (this.clockTaken) return;
    this.clockTaken = true;
    c.now = () => this.replayNow();
    c.set = (ev) => {
      this.rebase();
      if (ev && ev.speed > 0) this.recSpeed = ev.speed;
    };
    c.bump = () => {};
  }

  releaseClock() {
    const c = this.S.clock;
    if (this.clockTaken) {
      delete c.now;
      delete c.set;
      delete c.bump;
      this.clockTaken = false;
    }
    const L = this.rec.live;
    c.base = this.rec.liveNow();
    c.at = performance.now();
    c.speed = L.speed;
    c.paused = L.paused;
  }

  // -- moving in time ----------------------------------------------------------------------------

  // Show the recorded moment T: the keyframe before it, then the events up to T, quietly.
  async seekTo(T) {
    const rec = this.rec;
    if (rec.empty) return;
    T = Math.max(rec.start, Math.min(this.edge(), T));
    let k = rec.keyframes.length - 1;
    while (k > 0 && rec.keyframes[k].vt > T) k -= 1;
    const kf = rec.keyframes[k];
    this.takeClock(T);
    if ($("log")) clearLog();
    const { detail, scenario, ...snap } = kf.snap;
    this.S.scenario = scenario ? { name: scenario.name, status: scenario.status } : null;
    this.recSpeed = snap.clock.speed > 0 ? snap.clock.speed : 1;
    await this.feedOne(snap);
    if (detail) await this.feedOne(detail);
    this.cursor = kf.seq;
    await this.feedUntil(T);
    this.rebase(T);
    const map = this.S.map;
    if (map) {
      // the past does not animate: what landed by T has landed
      for (const [mid, f] of map.flights) if (f.deliver_at <= T) map.flights.delete(mid);
      map.pulses.length = 0;
      map.fizzles.length = 0;
    }
  }

  async feedUntil(T) {
    const rec = this.rec;
    if (this.cursor < rec.offset) { // trimmed away under the replay: start again from what is kept
      await this.seekTo(rec.start);
      return;
    }
    while (this.cursor < rec.seqEnd) {
      const item = rec.at(this.cursor);
      if (item[0] > T) break;
      this.cursor += 1;
      await this.feedOne(item[1]);
    }
  }

  enterReplay() {
    if (this.mode === "replay") return;
    this.mode = "replay";
    // the view holds everything recorded so far: freeze it at the live edge
    this.cursor = this.rec.seqEnd;
    this.takeClock(this.rec.liveNow());
  }

  toLiveMode() {
    this.mode = "live";
    this.playing = false;
    this.releaseClock();
    this.render();
  }

  goLive() {
    return this.serial(async () => {
      if (this.source === "file") { this.backOnline(); return; }
      if (this.mode === "live") return;
      if (this.cursor < this.rec.seqEnd) await this.seekTo(this.rec.liveNow());
      this.toLiveMode();
    });
  }

  play() {
    if (this.mode === "live") return;
    if (this.replayNow() >= this.edge() && this.source === "file") {
      this.playing = true;
      this.serial(() => this.seekTo(this.rec.start));
    }
    this.rebase();
    this.playing = true;
    this.loop();
    this.render();
  }

  // the play button and the space bar: freeze the view (live, or a replay playing), or play on
  toggleView() {
    if (this.mode === "live" || this.playing) this.pause();
    else this.play();
  }

  pause() {
    if (this.rec.empty) return; // nothing to show yet
    if (this.mode === "live") {
      this.serial(async () => { this.enterReplay(); this.playing = false; this.render(); });
      return;
    }
    this.rebase();
    this.playing = false;
    this.render();
  }

  // scrubbing: leave live (recording goes on), show the moment, then play on from there
  scrub(T) {
    if (this.rec.empty) return;
    const wasLive = this.mode === "live";
    this.pendingSeek = T;
    this.serial(async () => {
      if (this.pendingSeek === null) return;
      const target = this.pendingSeek;
      this.pendingSeek = null;
      if (wasLive || this.mode === "live") {
        this.enterReplay();
        this.playing = true;
      }
      await this.seekTo(target);
      this.loop();
      this.render();
    });
  }

  setFactor(f) {
    if (!(f > 0)) return;
    this.rebase();
    this.factor = f;
    this.render();
  }

  loop() {
    if (this.raf !== null || this.mode !== "replay" || !this.playing) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = null;
      if (this.mode !== "replay" || !this.playing) return;
      if (!this.stepping) {
        this.stepping = true;
        this.serial(async () => {
          try {
            if (this.mode !== "replay" || !this.playing) return;
            const T = this.replayNow();
            await this.feedUntil(T);
            if (T >= this.edge()) {
              if (this.source === "live") {
                await this.feedUntil(Infinity);
                this.toLiveMode(); // caught up: the page is live again
              } else {
                this.rebase(this.edge());
                this.playing = false;
                this.render();
              }
            }
          } finally {
            this.stepping = false;
          }
        });
      }
      this.loop();
    });
  }

  // -- files -------------------------------------------------------------------------------------

  exportRun() {
    this.showError(null);
    if (this.rec.empty) {
      this.showError("nothing recorded yet: wait for the live stream");
      return null;
    }
    const run = this.rec.toRun(this.source === "file" ? this.fileName : location.host, this.edge());
    const blob = new Blob([JSON.stringify(run)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const name = `edgestate-run-${slug(run.source)}-${(run.start_ms / 1000).toFixed(1)}s-${(run.end_ms / 1000).toFixed(1)}s.json`;
    download(url, name);
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return name;
  }

  async importFile(file) {
    this.showError(null);
    let rec;
    try {
      if (file.size > MAX_FILE_BYTES) throw new RunFileError(`the file is ${(file.size / 1048576).toFixed(1)} MB; at most ${MAX_FILE_BYTES / 1048576} MB`);
      const text = await file.text();
      let run;
      try {
        run = JSON.parse(text);
      } catch (e) {
        throw new RunFileError("not JSON: " + e.message);
      }
      validateRun(run);
      rec = Recording.fromRun(run);
    } catch (e) {
      this.showError(`Could not load ${file.name}: ${e instanceof RunFileError ? e.message : "unexpected error: " + e.message}. Nothing was changed.`);
      if (!(e instanceof RunFileError)) console.warn(e);
      return false;
    }
    await this.serial(async () => {
      this.offline = true;
      this.source = "file";
      this.fileName = file.name;
      this.disconnectFn();
      this.rec = rec;
      this.mode = "replay";
      this.playing = false;
      document.body.classList.add("timeline-offline");
      const conn = $("conn");
      if (conn) { conn.textContent = "offline: " + file.name; conn.className = "conn conn-offline"; }
      await this.seekTo(rec.start);
      this.render();
    });
    return true;
  }

  // leave a loaded file: back to the live stream
  backOnline() {
    this.offline = false;
    this.source = "live";
    this.fileName = "";
    this.rec = new Recording();
    document.body.classList.remove("timeline-offline");
    this.toLiveMode();
    const conn = $("conn");
    if (conn) { conn.textContent = "connecting"; conn.className = "conn conn-connecting"; }
    this.connectFn();
  }

  showError(msg) {
    this.bar.showError(msg);
  }

  render() {
    this.bar.render();
  }
}
