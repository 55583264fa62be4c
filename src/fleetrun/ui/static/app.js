// fleetrun ui: the pages, drawn from the JSON API; live through server-sent events.
// Every name, reason, output and log line is inserted as text (textContent /
// createTextNode), never as markup, so nothing in the record can run here.
"use strict";
(function () {
  const main = document.getElementById("main");
  const banner = document.getElementById("banner");
  const liveBadge = document.getElementById("live");
  const SVGNS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#a0cbe8", "#8cd17d", "#ffbe7d", "#d4a6c8", "#499894", "#f1ce63"];
  const STATE_SHORT = {
    succeeded: "ok", failed: "failed", running: "running", pending: "pending", skipped: "skipped",
    reused: "reused", cancelled: "cancelled", interrupted: "interrupted", not_started: "not started",
  };

  // ---- building blocks --------------------------------------------------------------
  // Control characters (C0 but tab and newline, DEL, C1) and the invisible marks that
  // reorder text (bidi overrides, embeddings, isolates) show as their escapes, as the
  // terminal shows them: a name cannot hide a character or read backwards on the page.
  const HIDDEN = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  const NAMED = { "\r": "\\r", "\x1b": "\\x1b" };
  function shown(value) {
    const s = String(value);
    return s.replace(HIDDEN, (c) => NAMED[c] || (c.charCodeAt(0) < 0x100
      ? "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0")
      : "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0")));
  }
  // A log's text as the terminal shows it: colour codes (SGR) left out, other control
  // characters as their escapes; tabs and line ends kept.
  const SGR = /\x1b\[[0-9;:]*m/g;
  function logText(value) {
    return shown(String(value).replace(SGR, "").replace(/\r\n/g, "\n"));
  }
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = shown(v);
      else if (k === "title") node.title = shown(v);
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(shown(c)));
    }
    return node;
  }
  // Replace a node's children; null, undefined and false are left out (not "null").
  function fill(node, ...kids) {
    node.replaceChildren(...kids.filter((k) => k !== null && k !== undefined && k !== false));
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    if (text !== undefined) node.textContent = shown(text);
    return node;
  }
  function titled(node, text) {
    node.append(svg("title", {}, text));
    return node;
  }
  const enc = encodeURIComponent;
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "\u2013";
    if (s < 10) return s.toFixed(2) + "s";
    if (s < 60) return s.toFixed(1) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.round(s % 60)).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }
  function when(t) {
    if (!t) return "\u2013";
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  function counts(c) {
    const order = ["succeeded", "reused", "failed", "skipped", "cancelled", "interrupted", "not_started", "running", "pending"];
    const keys = Object.keys(c || {}).sort((a, b) => (order.indexOf(a) + 99) % 108 - (order.indexOf(b) + 99) % 108);
    return keys.filter((k) => c[k]).map((k) => `${c[k]} ${k}`).join(", ") || "\u2013";
  }
  function statusBadge(s) {
    return el("span", { class: `status st-${s}`, text: s });
  }
  // Once the server has said it stops, a request still under way fails: the banner
  // keeps saying where the record is rather than "Failed to fetch".
  let serverGone = false;
  function setBanner(text, error) {
    if (serverGone && error) return;
    banner.hidden = !text;
    banner.className = error ? "banner error" : "banner";
    banner.textContent = text || "";
  }
  function runLink(id) {
    return el("a", { href: `/runs/${enc(id)}`, class: "mono", text: id });
  }

  // ---- the API ------------------------------------------------------------------------
  async function api(path) {
    const r = await fetch(path, { headers: { accept: "application/json" }, credentials: "same-origin" });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const e = new Error((body && body.error) || `${r.status} ${r.statusText}`);
      e.status = r.status;
      throw e;
    }
    return body;
  }
  const COOKIE = "fleetrun_token_" + (location.port || (location.protocol === "https:" ? "443" : "80"));
  function getToken() {
    for (const part of document.cookie.split(";")) {
      const [k, ...v] = part.trim().split("=");
      if (k === COOKIE) return decodeURIComponent(v.join("="));
    }
    return null;
  }
  function askToken(where, then, why) {
    fill(where);
    where.className = why ? "message error" : "message";
    const input = el("input", { type: "password", placeholder: "token", "aria-label": "session token" });
    const use = el("button", {
      text: "use token",
      onclick: () => {
        if (!input.value) return;
        document.cookie = `${COOKIE}=${enc(input.value)}; path=/; samesite=strict`;
        fill(where);
        then();
      },
    });
    where.append(el("span", { class: "tokenask" },
      why || "Actions need the token that `fleetrun ui` printed:", input, use));
  }
  async function act(runId, name, messageEl, done) {
    const token = getToken();
    if (!token) { askToken(messageEl, () => act(runId, name, messageEl, done)); return; }
    messageEl.className = "message";
    messageEl.textContent = `${name}\u2026`;
    let body = null;
    try {
      const r = await fetch(`/api/runs/${enc(runId)}/${name}`, {
        method: "POST", headers: { "X-Fleetrun-Token": token, accept: "application/json" },
        credentials: "same-origin",
      });
      body = await r.json();
      if (r.status === 403) {
        // A token from before (a ui restarted on this port prints a new one), or a
        // mistyped one: forget it and ask again, saying why.
        document.cookie = `${COOKIE}=; path=/; max-age=0; samesite=strict`;
        askToken(messageEl, () => act(runId, name, messageEl, done), body.error);
        return;
      }
      if (!r.ok) throw new Error(body.error || `${r.status}`);
    } catch (e) {
      messageEl.className = "message error";
      messageEl.textContent = e.message;
      return;
    }
    messageEl.textContent = body.message || "done";
    if (done) done(body);
  }

  // ---- live updates -------------------------------------------------------------------
  const listeners = new Set();
  // What the page shows, read once more when the server says it stops (the run's end).
  let finalLoad = async () => {};
  // The state directories served (the pages say them when the server is gone).
  let servedDirs = [];
  function stopped(es, dirs) {
    serverGone = true;
    es.close();
    liveBadge.textContent = "stopped";
    liveBadge.className = "live off";
    const where = (dirs && dirs.length ? dirs : servedDirs).join(", ");
    setBanner(`fleetrun ui stopped; the record is in ${where || "the state directory"}`, false);
  }
  function connectLive() {
    if (!window.EventSource) return;
    const es = new EventSource("/api/events");
    let failures = 0;
    es.addEventListener("open", () => { failures = 0; liveBadge.textContent = "live"; liveBadge.className = "live"; });
    let bye = false;
    es.addEventListener("error", () => {
      // One failed reconnection means the server is gone: say so, stop trying. After
      // ``bye`` the stream's end is the server stopping: no reconnection at all.
      if (bye || ++failures >= 2 || es.readyState === EventSource.CLOSED) { stopped(es, null); return; }
      liveBadge.textContent = "reconnecting\u2026"; liveBadge.className = "live off";
    });
    es.addEventListener("bye", async (ev) => {
      bye = true;
      let data = {};
      try { data = JSON.parse(ev.data); } catch (e) { data = {}; }
      try { await finalLoad(); } catch (e) { /* the banner below says the rest */ }
      stopped(es, data.state_dirs);
    });
    for (const kind of ["runs", "run", "resync"]) {
      es.addEventListener(kind, (ev) => {
        let data = {};
        try { data = JSON.parse(ev.data); } catch (e) { data = {}; }
        for (const fn of listeners) fn(kind, data);
      });
    }
    window.addEventListener("pagehide", () => es.close());
  }
  // A refresher runs ``load`` now and again after each change, never two at once.
  // Once the server is gone it loads nothing more (a request then would only be refused).
  function refresher(load, minGap) {
    let current = null, again = false, last = 0, timer = null;
    async function once() {
      last = Date.now();
      current = load().catch((e) => setBanner(e.message, true));
      await current;
      current = null;
    }
    async function run() {
      if (serverGone) return;
      if (current) { again = true; return; }
      const wait = last + minGap - Date.now();
      if (wait > 0) { if (!timer) timer = setTimeout(() => { timer = null; run(); }, wait); return; }
      await once();
      if (again) { again = false; run(); }
    }
    // The last state at once, whatever the gap: the server is about to stop.
    run.now = async () => {
      if (timer) { clearTimeout(timer); timer = null; }
      again = false;
      while (current) await current;
      await once();
    };
    return run;
  }

  // ---- the runs page ------------------------------------------------------------------
  async function runsPage() {
    const params = new URLSearchParams(location.search);
    const head = el("h1", { text: "Runs" });
    const filters = el("div", { class: "filters" });
    const body = el("div", {});
    fill(main, head, filters, body);
    const planSel = el("select", { "aria-label": "plan" });
    const statusSel = el("select", { "aria-label": "status" });
    filters.append(el("label", {}, "plan", planSel), el("label", {}, "status", statusSel));
    let filled = false;
    function onFilter() {
      const p = new URLSearchParams();
      if (planSel.value) p.set("plan", planSel.value);
      if (statusSel.value) p.set("status", statusSel.value);
      history.replaceState(null, "", p.toString() ? `/?${p}` : "/");
      refresh();
    }
    planSel.addEventListener("change", onFilter);
    statusSel.addEventListener("change", onFilter);
    async function load() {
      const p = new URLSearchParams(location.search);
      const data = await api(`/api/runs?${p}`);
      if (!filled) {
        planSel.append(el("option", { value: "", text: "all plans" }));
        for (const pl of data.plans) planSel.append(el("option", { value: pl.key, text: `${pl.name} (${pl.path})` }));
        statusSel.append(el("option", { value: "", text: "any status" }));
        for (const s of data.statuses) statusSel.append(el("option", { value: s, text: s }));
        planSel.value = params.get("plan") || "";
        statusSel.value = params.get("status") || "";
        filled = true;
      }
      servedDirs = data.state_dirs;
      setBanner(data.problems.join(" \u2014 "), false);
      if (!data.runs.length) {
        fill(body, el("p", { class: "empty", text: data.problems.length ? "No run can be shown." : "No runs match." }));
        return;
      }
      const rows = data.runs.map((r) => el("tr", { data: { run: r.id } },
        el("td", {}, runLink(r.id)),
        el("td", { title: r.plan_path }, r.plan_name, el("div", { class: "why mono", text: r.plan_path })),
        el("td", { text: r.kind }),
        el("td", {}, statusBadge(r.status)),
        el("td", { text: counts(r.counts) }),
        el("td", { text: when(r.started_at) }),
        el("td", { class: "n", text: dur(r.duration) }),
        el("td", {}, failedCell(r)),
        el("td", {}, retryLinks(r)),
      ));
      fill(body, el("table", { class: "runs" },
        el("thead", {}, el("tr", {}, ...["run", "plan", "kind", "status", "instances", "started", "duration", "who failed", "retries"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows)));
    }
    function failedCell(r) {
      if (!r.failed) return "";
      const link = el("a", { href: `/runs/${enc(r.id)}/attempt?key=${enc(r.failed.key)}`, class: "mono", text: r.failed.key });
      return el("span", {}, link, el("div", { class: "failed-line", text: r.failed.line || r.failed.reason }));
    }
    function retryLinks(r) {
      const out = el("span", {});
      if (r.parent_id) out.append("retry of ", runLink(r.parent_id));
      for (const c of r.retried_by) out.append(el("div", {}, "retried by ", runLink(c)));
      return out;
    }
    const refresh = refresher(load, 300);
    finalLoad = () => refresh.now();
    listeners.add((kind) => { if (kind === "runs" || kind === "resync" || kind === "run") refresh(); });
    await refresh();
  }

  // A run pruned (or never recorded): said once, in place of the page.
  let runGone = false;
  function sayRunGone(runId, message) {
    if (runGone) return;
    runGone = true;
    listeners.clear();
    setBanner("", false);
    document.title = `${runId} \u00b7 fleetrun`;
    fill(main, el("p", { class: "banner error", id: "run-gone", text: message || `run ${runId} is not on record` }),
      el("p", {}, el("a", { href: "/", text: "all runs" })));
  }
  // ``fn``, unless the run has gone from the record (404): then say so instead.
  async function unlessGone(runId, fn) {
    if (runGone) return;
    try { await fn(); } catch (e) {
      if (e.status === 404) sayRunGone(runId, e.message); else throw e;
    }
  }

  // ---- the run page -------------------------------------------------------------------
  async function runPage(runId) {
    const header = el("div", {});
    const actions = el("div", { class: "actions" });
    const message = el("span", { class: "message", role: "status" });
    const gridBox = el("div", {});
    const timelineBox = el("div", {});
    const wavesBox = el("div", {});
    const poolsBox = el("div", {});
    const outputsBox = el("div", {});
    const nextBox = el("div", {});
    fill(main, header, actions,
      el("h2", { text: "Grid" }), gridBox,
      el("h2", {}, "Timeline ", el("small", { text: "(queued time lighter; critical path outlined; click a bar for its log)" })), timelineBox,
      el("h2", { text: "Waves" }), wavesBox,
      el("h2", { text: "Pools" }), poolsBox,
      el("h2", { text: "Outputs" }), outputsBox,
      el("h2", { text: "Next" }), nextBox);
    let data = null;
    async function load() {
      await unlessGone(runId, loadRun);
    }
    async function loadRun() {
      data = await api(`/api/runs/${enc(runId)}`);
      servedDirs = [data.run.state_dir];
      drawHeader(data);
      drawActions(data);
      // (The plan's notes come with the timeline, which says them once.)
      drawGrid(gridBox, data.grid, runId);
      drawWaves(wavesBox, data.waves);
      drawPools(poolsBox, data.pools, data.run, data.now);
      drawOutputs(outputsBox, data.outputs);
      fill(nextBox, ...data.next.map((c) => el("div", { class: "cmd" }, el("code", { text: c.cmd }), el("span", { class: "why", text: `# ${c.why}` }))));
      timeline();  // at most every 1.5 s; the last change is always drawn
    }
    const timeline = refresher(() => unlessGone(runId, async () => {
      const t = await api(`/api/runs/${enc(runId)}/timeline`);
      drawTimeline(timelineBox, t, runId);
    }), 1500);
    function drawHeader(d) {
      const r = d.run;
      document.title = `${r.plan_name} \u00b7 ${r.id} \u00b7 fleetrun`;
      const links = el("p", { class: "note" });
      if (r.parent_id) links.append(`${r.kind} of `, runLink(r.parent_id), " ");
      for (const c of r.retried_by) links.append("retried by ", runLink(c), " ");
      links.append(el("a", { href: `/trends?plan=${enc(r.plan_key)}`, text: "trends" }));
      const facts = [["status", statusBadge(r.status)], ["kind", r.kind], ["mode", r.mode],
        ["-j", r.parallelism || "unbounded"], ["started", when(r.started_at)],
        ["duration", dur((r.ended_at || d.now) - r.started_at)], ["instances", counts(r.counts)],
        ["by", `${r.user}@${r.host} pid ${r.pid}`]];
      fill(header, 
        el("h1", {}, r.plan_name, el("span", { class: "sub mono", text: r.id })),
        el("div", { class: "why mono", text: r.plan_path }),
        el("dl", { class: "facts" }, ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", {}, v)))),
        links);
    }
    function drawActions(d) {
      const r = d.run;
      const buttons = [];
      const notOk = Object.entries(r.counts).some(([k, v]) => v && !["succeeded", "reused", "running", "pending"].includes(k));
      if (!r.live && r.ended_at && notOk) {
        buttons.push(el("button", { class: "primary", id: "act-retry", text: "Retry what did not succeed",
          onclick: () => act(runId, "retry", message, (b) => { if (b.run) location.href = `/runs/${enc(b.run)}`; }) }));
      }
      if (r.live) {
        buttons.push(el("button", { class: "danger", id: "act-cancel", text: "Cancel run",
          onclick: () => act(runId, "cancel", message) }));
      }
      if (d.waves.waiting) {
        buttons.push(el("button", { id: "act-promote", text: "Promote the next wave",
          onclick: () => act(runId, "promote", message) }));
      }
      if (d.first_failed) {
        buttons.push(el("a", { href: `/runs/${enc(runId)}/attempt?key=${enc(d.first_failed.key)}&n=${d.first_failed.n}`, text: "first failure's log" }));
      }
      fill(actions, ...buttons, message);
    }
    const refresh = refresher(load, 150);
    finalLoad = async () => { await refresh.now(); await timeline.now(); };
    // ``runs``: the list changed (a prune among others).
    listeners.add((kind, ev) => {
      if (kind === "resync" || kind === "runs" || (kind === "run" && ev.id === runId)) refresh();
    });
    await refresh();
  }

  function drawGrid(box, grid, runId) {
    if (!grid.cells.length) { fill(box, el("p", { class: "empty", text: "No instances." })); return; }
    const byRow = grid.targets.map(() => new Array(grid.tasks.length).fill(null));
    for (const c of grid.cells) byRow[c[1]][c[0]] = c;
    const head = el("tr", {}, el("th", { class: "target", text: "target" }), ...grid.tasks.map((t) => el("th", { class: t.length > 24 ? "task long" : "task", text: t, title: t })));
    const rows = grid.targets.map((target, ri) => el("tr", {},
      el("th", { class: "target", text: target === null ? "(no target)" : target, title: target }),
      ...byRow[ri].map((c) => {
        if (!c) return el("td", { class: "cell none" });
        const [, , key, state, attempts, exit, reason] = c;
        const tip = `${key}: ${state}` + (attempts ? `, ${attempts} attempt(s)` : "") +
          (exit !== null && exit !== undefined ? `, exit ${exit}` : "") + (reason ? ` \u2014 ${reason}` : "");
        const label = STATE_SHORT[state] || state;
        return el("td", { class: `cell st-${state}`, data: { key: key, state: state } },
          el("a", { href: `/runs/${enc(runId)}/attempt?key=${enc(key)}`, title: tip, text: attempts > 1 ? `${label} \u00d7${attempts}` : label }));
      })));
    const legend = el("div", { class: "legend" }, ...["succeeded", "running", "pending", "failed", "skipped", "reused", "cancelled"].map(
      (s) => el("span", {}, el("span", { class: `swatch st-${s}` }), s)));
    fill(box, legend, el("div", { class: "grid-wrap" }, el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, ...rows))));
  }

  function drawTimeline(box, t, runId) {
    if (!t.bars.length) { fill(box, el("p", { class: "empty", text: "No attempts yet." })); return; }
    const colour = new Map(t.tasks.map((name, i) => [name, PALETTE[i % PALETTE.length]]));
    const crit = new Set(t.critical);
    // Rows: targets in order of first start; lanes keep overlapping bars apart.
    const rows = new Map();
    for (const b of t.bars) {
      const row = b[2] === null ? "(no target)" : b[2];
      if (!rows.has(row)) rows.set(row, []);
      rows.get(row).push(b);
    }
    const labelW = 170, plotW = 900, laneH = 12, gap = 3, axisH = 22;
    const span = Math.max(t.t1 - t.t0, 0.001);
    const x = (at) => labelW + ((at - t.t0) / span) * plotW;
    let y = axisH;
    const g = svg("g", {});
    for (const [name, bars] of rows) {
      bars.sort((a, b) => (a[7] || a[4]) - (b[7] || b[4]));
      const lanes = [];
      const placed = bars.map((b) => {
        const start = b[7] || b[4];
        let lane = lanes.findIndex((end) => end <= start);
        if (lane < 0) { lane = lanes.length; lanes.push(0); }
        lanes[lane] = b[5] || t.t1;
        return [b, lane];
      });
      const h = Math.max(1, lanes.length) * (laneH + 1);
      g.append(titled(svg("text", { x: 4, y: y + Math.min(h, laneH) - 2 }, name.length > 26 ? name.slice(0, 25) + "\u2026" : name), name));
      for (const [b, lane] of placed) {
        const [key, task, , n, started, ended, outcome, ready, qreason, throttled, retryReason, exit] = b;
        const top = y + lane * (laneH + 1);
        if (ready && started - ready > 0) {
          g.append(titled(svg("rect", { class: "queued", x: x(ready), y: top, width: Math.max(0.5, x(started) - x(ready)), height: laneH, fill: colour.get(task) }),
            `${key} #${n} queued ${dur(started - ready)}${qreason ? ": " + qreason : ""}`));
        }
        const end = ended || t.t1;
        const cls = ["bar", `o-${outcome || "open"}`, crit.has(key) ? "crit" : ""].join(" ");
        const rect = svg("rect", { class: cls, x: x(started), y: top, width: Math.max(1.5, x(end) - x(started)), height: laneH, fill: colour.get(task), tabindex: 0 });
        rect.dataset.key = key;
        const tip = `${key} attempt ${n}: ${outcome || "running"} in ${dur(end - started)}` +
          (exit !== null ? `, exit ${exit}` : "") + (throttled ? ", throttled" : "") +
          (retryReason ? ` \u2014 ${retryReason}` : "") + (qreason ? `; queued for ${qreason}` : "");
        titled(rect, tip);
        rect.addEventListener("click", () => { location.href = `/runs/${enc(runId)}/attempt?key=${enc(key)}&n=${n}`; });
        g.append(rect);
      }
      y += h + gap;
    }
    const root = svg("svg", { width: labelW + plotW + 20, height: y + 4, role: "img", "aria-label": "timeline of attempts" });
    const step = niceStep(span / 8);
    for (let s = 0; s <= span + 1e-9; s += step) {
      root.append(svg("line", { class: "axis", x1: x(t.t0 + s), x2: x(t.t0 + s), y1: axisH - 4, y2: y }));
      // A label near the right edge ends at its line, so it is not cut off.
      const atEnd = x(t.t0 + s) + 48 > labelW + plotW + 20;
      root.append(svg("text", { class: "tick", x: x(t.t0 + s) + (atEnd ? -2 : 2), y: axisH - 8, "text-anchor": atEnd ? "end" : null }, "+" + dur(s)));
    }
    root.append(g);
    const facts = `${t.total} attempts` + (t.shown < t.total ? ` (the latest ${t.shown} drawn)` : "") +
      `; wall ${dur(t.wall)}, task time ${dur(t.task_time)}, queued ${dur(t.queued)}` +
      (t.held_back ? ` \u2014 ${t.held_back}` : "");
    const path = t.critical_path.length
      ? el("p", { class: "note" }, "critical path: ", t.critical_path.map((s) => `${s.key} (${dur(s.duration)})`).join(" \u2192 "))
      : null;
    fill(box, el("p", { class: "note", text: facts }), el("div", { class: "chart" }, root), path,
      ...t.notes.map((n) => el("p", { class: "note", text: n })));
  }
  function niceStep(raw) {
    const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
    return steps.find((s) => s >= raw) || 86400;
  }

  function drawWaves(box, waves) {
    if (!waves.rollout) { fill(box, el("p", { class: "empty", text: "No rollout: every target at once." })); return; }
    const cards = waves.list.map((w) => el("div", { class: `wave s-${w.state}`, data: { wave: w.wave, state: w.state } },
      el("div", {}, el("strong", { text: `wave ${w.wave}` }), ` of ${waves.total}: `, el("span", { class: "wave-state", text: w.state })),
      el("div", { class: "targets", text: w.targets.join(", ") }),
      w.reason ? el("div", { class: "why", text: w.reason }) : null));
    for (let i = waves.list.length + 1; i <= waves.total; i++) {
      cards.push(el("div", { class: "wave s-closed" }, el("strong", { text: `wave ${i}` }), ` of ${waves.total}: not yet`));
    }
    fill(box, el("div", { class: "waves" }, ...cards),
      waves.pause ? el("p", { class: "note", text: "pause: each next wave waits for a promote." }) : null);
  }

  function drawPools(box, pools, run, now) {
    if (!pools.length) { fill(box, el("p", { class: "empty", text: "No pools." })); return; }
    const t0 = run.started_at, t1 = Math.max(run.ended_at || now, t0 + 1);
    fill(box, ...pools.map((p) => {
      const w = 600, h = 90, left = 40;
      const x = (at) => left + ((at - t0) / (t1 - t0)) * (w - left - 10);
      const top = Math.max(p.rate || 0, ...p.series.map((s) => s[1] || 0), 0.001);
      const ctop = Math.max(p.concurrency || 0, ...p.series.map((s) => s[2] || 0), 1);
      const root = svg("svg", { width: w, height: h + 16, role: "img", "aria-label": `pool ${p.name} over time` });
      root.append(svg("line", { class: "axis", x1: left, x2: w - 10, y1: h, y2: h }));
      const ratePts = [[t0, p.rate || 0], ...p.series.map((s) => [s[0], s[1]]), [t1, null]];
      const concPts = [[t0, p.concurrency], ...p.series.map((s) => [s[0], s[2]]), [t1, null]];
      function steps(pts, max, cls) {
        let d = "", prev = null;
        for (const [at, v] of pts) {
          const val = v === null ? prev : v;
          if (val === null || val === undefined) continue;
          const yy = h - (val / max) * (h - 8);
          d += d ? ` H${x(at).toFixed(1)} V${yy.toFixed(1)}` : `M${x(at).toFixed(1)} ${yy.toFixed(1)}`;
          prev = val;
        }
        if (d) root.append(svg("path", { class: cls, d: d }));
      }
      for (const s of p.series) {
        if (s[3] > 0) root.append(titled(svg("rect", { class: "pause", x: x(s[0]), y: 0, width: Math.max(1, x(s[0] + s[3]) - x(s[0])), height: h }), `paused ${dur(s[3])}: ${s[4]}`));
      }
      if (p.rate) steps(ratePts, top, "line-rate");
      if (p.concurrency) steps(concPts, ctop, "line-conc");
      for (const at of p.starts.slice(-2000)) root.append(svg("rect", { class: "start", x: x(at), y: h + 2, width: 1, height: 5 }));
      for (const at of p.throttles) root.append(titled(svg("rect", { class: "throttle", x: x(at) - 1, y: h + 8, width: 3, height: 6 }), `throttled at +${dur(at - t0)}`));
      root.append(svg("text", { class: "tick", x: 2, y: 10 }, p.rate ? `${top.toFixed(2)}/s` : ""));
      const last = p.series.length ? p.series[p.series.length - 1] : null;
      const facts = `rate ${p.rate ? (last ? last[1] : p.rate).toFixed(2) + "/s" : "\u2013"} (limit ${p.rate ? p.rate + "/s" : "\u2013"}), ` +
        `concurrency ${last && last[2] !== null ? last[2] : (p.concurrency || "uncapped")} (limit ${p.concurrency || "\u2013"}), ` +
        `in flight ${p.in_flight}, ${p.attempts} attempts, ${p.throttles.length} throttled` + (p.adaptive ? ", adaptive" : "");
      const reasons = p.series.slice(-5).map((s) => el("li", { text: `+${dur(s[0] - t0)}: ${s[4]}` }));
      return el("div", { class: "card", data: { pool: p.name } },
        el("strong", { text: p.name }), " ", el("span", { class: "pool-facts", text: facts }),
        el("div", { class: "legend" }, el("span", {}, el("span", { class: "swatch line-rate-sw" }), "rate (blue)"),
          el("span", {}, "concurrency (orange)"), el("span", {}, "starts (green ticks)"), el("span", {}, "throttles (red)"), el("span", {}, "pauses (yellow)")),
        el("div", { class: "chart" }, root),
        reasons.length ? el("ul", {}, ...reasons) : null);
    }));
  }

  function drawOutputs(box, outputs) {
    if (!outputs.length) { fill(box, el("p", { class: "empty", text: "No outputs published." })); return; }
    const rows = [];
    for (const o of outputs) for (const [k, v] of Object.entries(o.outputs)) {
      rows.push(el("tr", {}, el("td", { class: "mono", text: o.key }), el("td", { class: "mono", text: k }), el("td", { class: "mono", text: v })));
    }
    fill(box, el("table", { class: "outputs" }, el("thead", {}, el("tr", {}, el("th", { text: "instance" }), el("th", { text: "output" }), el("th", { text: "value" }))), el("tbody", {}, ...rows)));
  }

  // ---- the attempt page ---------------------------------------------------------------
  async function attemptPage(runId) {
    const params = new URLSearchParams(location.search);
    const q = new URLSearchParams();
    if (params.get("key") !== null) q.set("key", params.get("key"));
    if (params.get("n") !== null) q.set("n", params.get("n"));
    const header = el("div", {});
    const searchBox = el("input", { type: "search", placeholder: "search the log", "aria-label": "search the log" });
    const matches = el("ul", { class: "matches" });
    const earlier = el("button", { text: "load earlier", hidden: true });
    const status = el("p", { class: "note", role: "status" });
    const pre = el("pre", { class: "log", id: "log", tabindex: 0 });
    fill(main, header,
      el("form", { class: "search" }, searchBox, el("button", { type: "submit", text: "search" })),
      matches, earlier, pre, status);
    let a;
    try {
      a = await api(`/api/runs/${enc(runId)}/attempt?${q}`);
    } catch (e) {
      if (e.status === 404 && /not on record/.test(e.message)) { sayRunGone(runId, e.message); return; }
      fill(main, el("p", { class: "banner error", text: e.message }), el("p", {}, el("a", { href: `/runs/${enc(runId)}`, text: "back to the run" })));
      return;
    }
    // A prune while the page is open: the run leaves the record.
    const check = refresher(() => unlessGone(runId, () => api(`/api/runs/${enc(runId)}/attempt?${q}`)), 300);
    listeners.add((kind) => { if (kind === "runs" || kind === "resync") check(); });
    q.set("key", a.key);
    q.set("n", String(a.n));
    history.replaceState(null, "", `/runs/${enc(runId)}/attempt?${q}`);
    drawAttemptHeader(header, a, runId);
    let start = null, end = 0, done = a.outcome !== null;
    async function piece(offset) {
      const p = new URLSearchParams(q);
      if (offset !== null) p.set("offset", String(offset));
      try {
        return await api(`/api/runs/${enc(runId)}/log?${p}`);
      } catch (e) {
        if (e.status === 404) { sayRunGone(runId, e.message); done = true; return { gone: "", text: "", pruned: true }; }
        throw e;
      }
    }
    function gone(text) {
      status.textContent = text;
      status.className = "banner error";
      status.id = "log-gone";
    }
    async function loadFrom(offset) {
      const p = await piece(offset);
      if (p.pruned) return;
      if (p.gone) { gone(p.gone); return; }
      pre.textContent = logText(p.text);
      start = p.start; end = p.end; done = p.done;
      earlier.hidden = start <= 0;
      status.textContent = `${p.size} bytes` + (done ? "" : " \u2014 running, following");
      pre.scrollTop = offset === null ? pre.scrollHeight : 0;
    }
    earlier.addEventListener("click", async () => {
      const p = new URLSearchParams(q);
      p.set("before", String(start));
      const got = await api(`/api/runs/${enc(runId)}/log?${p}`);
      if (got.gone) { gone(got.gone); return; }
      const keep = pre.scrollHeight - pre.scrollTop;
      pre.prepend(document.createTextNode(logText(got.text)));
      pre.scrollTop = pre.scrollHeight - keep;
      start = got.start;
      earlier.hidden = start <= 0;
    });
    async function follow() {
      if (done) return;
      const p = await piece(end);
      if (p.pruned) return;
      if (p.gone) { gone(p.gone); return; }
      if (p.text) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(document.createTextNode(logText(p.text)));
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      end = p.end; done = p.done;
      status.textContent = `${p.size} bytes` + (done ? "" : " \u2014 running, following");
      if (done) {
        const again = await api(`/api/runs/${enc(runId)}/attempt?${q}`);
        drawAttemptHeader(header, again, runId);
      }
    }
    searchBox.form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams(q);
      p.set("q", searchBox.value);
      const res = await api(`/api/runs/${enc(runId)}/search?${p}`);
      if (res.gone) { gone(res.gone); return; }
      fill(matches, ...res.matches.map((m) => el("li", {},
        el("button", { type: "button", text: `line ${m.line}`, onclick: () => loadFrom(m.offset) }),
        el("span", { class: "mono", text: String(m.text).replace(SGR, "") }))));
      if (!res.matches.length) matches.append(el("li", { class: "empty", text: "no line matches" }));
      if (res.truncated) matches.append(el("li", { class: "note", text: "more matches not shown" }));
    });
    finalLoad = async () => { if (!done) await follow(); };
    await loadFrom(null);
    const timer = setInterval(() => { if (done || serverGone) clearInterval(timer); else follow().catch((e) => setBanner(e.message, true)); }, 1000);
  }
  function drawAttemptHeader(header, a, runId) {
    const siblings = el("span", {}, ...a.attempts.map((s) => s.n === a.n
      ? el("strong", { text: ` #${s.n}` })
      : el("a", { href: `/runs/${enc(runId)}/attempt?key=${enc(a.key)}&n=${s.n}`, text: ` #${s.n}`, title: s.outcome || "running" })));
    const exit = a.timed_out ? "timed out" : a.signal ? `signal ${a.signal}` : a.exit_code !== null ? `exit ${a.exit_code}` : "\u2013";
    const handle = [a.executor, a.host, a.pid !== null ? `pid ${a.pid}` : null, a.pgid !== null ? `pgid ${a.pgid}` : null, a.job].filter(Boolean).join(", ");
    const facts = [["outcome", statusBadge(a.outcome || "running")], ["exit", exit],
      ["started", when(a.started_at)], ["took", a.ended_at ? dur(a.ended_at - a.started_at) : "running"],
      ["queued", a.ready_at ? dur(a.started_at - a.ready_at) + (a.queued_reason ? ` (${a.queued_reason})` : "") : "\u2013"],
      ["handle", handle || "\u2013"]];
    fill(header, 
      el("p", {}, el("a", { href: `/runs/${enc(runId)}`, text: `\u2190 run ${runId}` })),
      el("h1", {}, el("span", { class: "mono", text: a.key }), el("span", { class: "sub" }, "attempt", siblings)),
      el("dl", { class: "facts" }, ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", {}, v)))),
      a.retry_reason ? el("p", { class: "note", text: `retry: ${a.retry_reason}` }) : null,
      el("div", { class: "cmd" }, el("code", { text: a.command || "(command not recorded)" })),
      a.gone ? el("p", { class: "banner error", text: a.gone }) : null);
  }

  // ---- the trends page ----------------------------------------------------------------
  async function trendsPage() {
    const params = new URLSearchParams(location.search);
    const planSel = el("select", { "aria-label": "plan" });
    const taskSel = el("select", { "aria-label": "task" });
    const body = el("div", {});
    fill(main, el("h1", { text: "Trends" }), el("div", { class: "filters" },
      el("label", {}, "plan", planSel), el("label", {}, "task", taskSel)), body);
    const runs = await api("/api/runs");
    for (const pl of runs.plans) planSel.append(el("option", { value: pl.key, text: `${pl.name} (${pl.path})` }));
    planSel.value = params.get("plan") || (runs.plans[0] ? runs.plans[0].key : "");
    async function load() {
      const p = new URLSearchParams();
      if (planSel.value) p.set("plan", planSel.value);
      if (taskSel.value) p.set("task", taskSel.value);
      history.replaceState(null, "", `/trends?${p}`);
      if (!planSel.value) { fill(body, el("p", { class: "empty", text: "No runs on record." })); return; }
      const t = await api(`/api/trends?${p}`);
      const keep = taskSel.value;
      fill(taskSel, ...t.tasks.map((name) => el("option", { value: name, text: name })));
      if (t.tasks.includes(keep)) taskSel.value = keep;
      if (!t.task && t.tasks.length) { taskSel.value = t.tasks[0]; return load(); }
      drawTrend(body, t);
    }
    taskSel.value = params.get("task") || "";
    planSel.addEventListener("change", () => { fill(taskSel); load(); });
    taskSel.addEventListener("change", load);
    if (params.get("task")) taskSel.append(el("option", { value: params.get("task"), text: params.get("task") }));
    taskSel.value = params.get("task") || "";
    await load();
  }
  function drawTrend(box, t) {
    if (!t.points.length) { fill(box, el("p", { class: "empty", text: "No run of this task has ended yet." })); return; }
    const w = 700, h = 180, left = 50;
    const top = Math.max(...t.points.map((p) => p.max || 0), 0.001);
    const x = (i) => left + (t.points.length === 1 ? (w - left) / 2 : (i / (t.points.length - 1)) * (w - left - 20));
    const y = (v) => h - (v / top) * (h - 20);
    const root = svg("svg", { width: w, height: h + 20, role: "img", "aria-label": `${t.task} duration across runs` });
    root.append(svg("line", { class: "axis", x1: left, x2: w, y1: h, y2: h }));
    root.append(svg("text", { class: "tick", x: 2, y: 14 }, dur(top)));
    let d = "";
    t.points.forEach((p, i) => {
      if (p.median === null) return;
      d += (d ? " L" : "M") + `${x(i).toFixed(1)} ${y(p.median).toFixed(1)}`;
    });
    if (d) root.append(svg("path", { class: "trend-median", d: d }));
    t.points.forEach((p, i) => {
      if (p.max !== null) root.append(titled(svg("rect", { class: "trend-max", x: x(i) - 2, y: y(p.max) - 2, width: 4, height: 4 }), `${p.run}: longest ${dur(p.max)}`));
      if (p.median !== null) root.append(titled(svg("circle", { class: "trend-point", cx: x(i), cy: y(p.median), r: 3 }), `${p.run}: median ${dur(p.median)}`));
    });
    const rows = t.points.slice().reverse().map((p) => el("tr", {},
      el("td", {}, runLink(p.run)), el("td", {}, statusBadge(p.status)), el("td", { class: "n", text: p.instances }),
      el("td", { class: "n", text: dur(p.median) }), el("td", { class: "n", text: dur(p.mean) }),
      el("td", { class: "n", text: dur(p.max) }), el("td", { class: "n", text: p.failed })));
    fill(box, el("p", { class: "note", text: `${t.plan_name}: ${t.task} across the latest ${t.points.length} runs (median line, longest squares)` }),
      el("div", { class: "chart" }, root),
      el("table", {}, el("thead", {}, el("tr", {}, ...["run", "status", "instances", "median", "mean", "longest", "failed"].map((hd) => el("th", { text: hd })))), el("tbody", {}, ...rows)));
  }

  // ---- the router ---------------------------------------------------------------------
  async function route() {
    const path = location.pathname;
    let m;
    try {
      if (path === "/") await runsPage();
      else if ((m = path.match(/^\/runs\/([^/]+)\/attempt$/))) await attemptPage(decodeURIComponent(m[1]));
      else if ((m = path.match(/^\/runs\/([^/]+)$/))) await runPage(decodeURIComponent(m[1]));
      else if (path === "/trends") await trendsPage();
      else fill(main, el("p", { class: "empty", text: "No such page." }));
    } catch (e) {
      setBanner(e.message, true);
    }
  }
  connectLive();
  route();
})();
