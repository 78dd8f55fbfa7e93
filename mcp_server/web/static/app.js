// OpsMedic dashboard: plain JS, no build step. Every piece of data is shown through
// textContent (incident titles, log lines and RCA text are untrusted), never innerHTML.
"use strict";

(function () {
  const TOKEN_KEY = "opsmedic.token";
  const $ = (id) => document.getElementById(id);
  const incidentMatch = location.pathname.match(/^\/incidents\/(\d+)$/);
  const incidentId = incidentMatch ? Number(incidentMatch[1]) : null;
  const state = { overview: null, cursor: null, charts: {}, points: [], pending: new Set(), timer: null };

  // --- small DOM helpers -------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fill(parent, nodes) {
    parent.replaceChildren(...nodes);
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    const secs = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (secs < 60) return secs + "s ago";
    if (secs < 3600) return Math.round(secs / 60) + "m ago";
    if (secs < 86400) return Math.round(secs / 3600) + "h ago";
    return date.toLocaleString();
  }

  function badge(text, level) {
    return el("span", { className: "badge " + (level || "") }, text);
  }

  const LEVEL = {
    ok: "ok", warn: "warn", crit: "crit", open: "crit", diagnosing: "warn",
    awaiting_approval: "warn", healing: "warn", verifying: "warn", resolved: "ok",
    escalated: "crit", running: "ok", failed: "crit", error: "crit", refused: "warn",
    stalled: "crit", critical: "crit", warning: "warn", info: "",
  };

  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  // --- API ----------------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (token()) h.Authorization = "Bearer " + token();
    return h;
  }

  class NeedToken extends Error {}

  async function api(path, options) {
    const init = Object.assign({ cache: "no-store" }, options || {});
    init.headers = headers(init.headers);
    const res = await fetch(path, init);
    if (res.status === 401) {
      showTokenForm(true);
      throw new NeedToken("this server needs an operator token");
    }
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.status + " " + res.statusText);
    return body;
  }

  function showTokenForm(required) {
    $("token-form").classList.toggle("required", required);
    $("token-forget").hidden = !token();
    if (required) notice("This server requires a bearer token: paste one of OPSMEDIC_AUTH__TOKENS above.");
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    notice("");
    refreshAll();
  });

  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-forget").hidden = true;
    refreshAll();
  });

  // --- panels -------------------------------------------------------------------------------

  function card(label, value, level, detail) {
    return el("div", { className: "card " + (level || "") },
      el("div", { className: "card-label" }, label),
      el("div", { className: "card-value" }, value),
      el("div", { className: "card-detail" }, detail || ""));
  }

  async function loadOverview() {
    const o = await api("/api/overview");
    state.overview = o;
    $("mode").textContent = "mode: " + o.mode;
    $("token-forget").hidden = !token();
    $("token-form").classList.remove("required");
    const targets = o.targets || [];
    const bad = targets.filter((t) => t.health !== "ok" && !t.held).length;  // held: down on purpose
    const host = o.host;
    const health = o.health || { overall: 100, targets: [] };
    const hurt = health.targets.filter((t) => t.score < 100).slice(0, 3);
    fill($("cards"), [
      card("health score", health.overall, health.overall >= 80 ? "ok" : health.overall >= 50 ? "warn" : "crit",
        hurt.length ? hurt.map((t) => t.target + " " + t.score).join(", ") : "every target at 100"),
      card("active incidents", o.incidents.active, o.incidents.active ? "crit" : "ok",
        Object.entries(o.incidents.by_status).filter(([, n]) => n).map(([s, n]) => s + " " + n).join(", ")),
      card("targets", targets.length - bad + " / " + targets.length + " healthy", bad ? "warn" : "ok",
        bad ? bad + " need attention" : "all healthy"),
      card("host", host ? host.status : "n/a", host ? host.status : "",
        host ? "cpu " + host.cpu.percent + "%, mem " + host.memory.percent + "%, load " + host.load.load1 : ""),
      card("audit chain", o.audit.ok ? "ok" : "BROKEN", o.audit.ok ? "ok" : "crit",
        o.audit.ok ? o.audit.checked + " entries verified" : "first bad seq " + o.audit.bad_seq),
    ]);
    fill($("targets"), targets.map((t) =>
      el("tr", { dataset: { target: t.target } },
        el("td", {}, t.target),
        el("td", {}, badge(t.status, LEVEL[t.health]),
          t.held ? el("span", { title: heldText(t.held) }, " ", badge("held", "warn")) : null),
        el("td", { className: "clip" }, t.detail),
        el("td", {}, t.incidents ? badge(String(t.incidents), "crit") : "0"))));
    const holds = o.holds || [];
    $("holds").textContent = holds.length ? "held: " + holds.map(heldText).join(" · ") : "";
    const sources = Object.entries(o.sources).map(([k, v]) => k + ": " + v).join(" · ");
    const tasks = Object.entries(o.tasks || {}).map(([k, v]) => k + ": " + v).join(" · ");
    $("sources").textContent = sources + (tasks ? " | duties " + tasks : "");
    if (host) {
      $("host-line").textContent = host.hostname + " · " + host.disks.map((d) => d.mount + " " + d.percent + "%").join(", ");
    }
  }

  function heldText(h) {
    const until = h.until ? "until " + h.until.replace("T", " ").replace(":00Z", " UTC") : "by label";
    return h.target + " " + until + " (" + h.by + ": " + h.reason + ")";
  }

  function incidentItem(inc) {
    const rca = inc.rca ? el("p", { className: "rca" }, "RCA (" + inc.rca.category + ", " + inc.rca.author + "): " + inc.rca.summary) : null;
    const last = inc.last_event ? el("p", { className: "muted small" }, when(inc.last_event.ts) + " · " + inc.last_event.kind + ": " + inc.last_event.text) : null;
    return el("li", { className: "incident", dataset: { id: inc.id, target: inc.target } },
      el("a", { href: "/incidents/" + inc.id },
        el("span", { className: "inc-id" }, "#" + inc.id),
        badge(inc.status, LEVEL[inc.status]),
        badge(inc.severity, LEVEL[inc.severity]),
        el("span", { className: "inc-target" }, inc.target),
        el("span", { className: "inc-title" }, inc.title),
        inc.count > 1 ? el("span", { className: "muted" }, " ×" + inc.count) : null),
      rca, last);
  }

  async function loadIncidents() {
    const body = await api("/api/incidents?status=active&rca=1&limit=100");
    const list = $("incidents");
    fill(list, body.incidents.map(incidentItem));
    list.dataset.count = String(body.incidents.length);
    $("incidents-empty").hidden = body.incidents.length > 0;
  }

  async function loadJobs() {
    const [jobs, runs] = await Promise.all([api("/api/jobs"), api("/api/runs?limit=15")]);
    fill($("jobs"), jobs.jobs.map((j) =>
      el("tr", {}, el("td", {}, j.id), el("td", {}, j.bot), el("td", {}, badge(j.status, LEVEL[j.status])),
        el("td", {}, when(j.last_heartbeat)))));
    if (!jobs.jobs.length) fill($("jobs"), [el("tr", {}, el("td", { colspan: 4, className: "muted" }, "No jobs reported yet."))]);
    fill($("runs"), runs.runs.map(runRow));
  }

  function runRow(r) {
    return el("tr", {}, el("td", { className: "clip" }, r.id), el("td", {}, r.kind), el("td", {}, r.subject),
      el("td", {}, badge(r.status, LEVEL[r.status])), el("td", {}, when(r.started_at)));
  }

  async function loadAudit() {
    const body = await api("/api/audit?limit=30");
    const chain = $("chain");
    chain.textContent = body.chain.ok ? "chain ok (" + body.chain.checked + ")" : "chain BROKEN at seq " + body.chain.bad_seq;
    chain.className = "badge " + (body.chain.ok ? "ok" : "crit");
    chain.title = body.chain.reason || "";
    fill($("audit"), body.entries.map((e) =>
      el("tr", {}, el("td", {}, e.seq), el("td", {}, when(e.ts)), el("td", {}, e.actor + " (" + e.transport + ")"),
        el("td", {}, e.tool), el("td", { className: "clip" }, e.target || ""),
        el("td", {}, badge(e.outcome, LEVEL[e.outcome])),
        el("td", {}, e.duration_ms === null || e.duration_ms === undefined ? "" : e.duration_ms.toFixed(1)))));
  }

  function eventItem(e) {
    const data = e.data || {};
    const text = e.type === "ingest.batch" ? data.count + " events" : data.title || data.text || data.status || "";
    return el("li", { dataset: { seq: e.seq } }, el("span", { className: "muted" }, when(e.ts) + " "),
      badge(e.type, ""), " ", e.target || "", text ? " — " + text : "");
  }

  async function loadEvents() {
    const body = await api("/api/events?limit=30");
    fill($("events"), body.events.slice().reverse().map(eventItem));
    if (state.cursor === null) state.cursor = body.head;
  }

  // --- host charts (uPlot, vendored) ------------------------------------------------------

  function makeChart(id, label, color) {
    const box = $(id);
    const opts = {
      width: Math.max(240, box.clientWidth || 320), height: 140,
      scales: { x: { time: true, auto: false }, y: { range: [0, 100] } },
      legend: { show: false },
      series: [{}, { label: label, stroke: color, width: 1.5, fill: color + "22" }],
      axes: [{ size: 30 }, { size: 50, values: (u, vals) => vals.map((v) => v + "%") }],
    };
    return new uPlot(opts, [[], []], box);
  }

  function drawCharts() {
    if (typeof uPlot === "undefined") return;
    if (!state.charts.cpu) {
      state.charts.cpu = makeChart("chart-cpu", "CPU %", "#2563eb");
      state.charts.mem = makeChart("chart-mem", "Memory %", "#9333ea");
    }
    const xs = state.points.map((p) => p.t);
    const last = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
    const span = { min: Math.min(xs.length ? xs[0] : last, last - 600), max: last + 5 }; // >= 10 min
    for (const [name, key] of [["cpu", "cpu"], ["mem", "mem"]]) {
      state.charts[name].setData([xs, state.points.map((p) => p[key])], false);
      state.charts[name].setScale("x", span);
    }
  }

  async function loadHostHistory() {
    const body = await api("/api/metrics/host/history");
    state.points = body.points;
    drawCharts();
  }

  function addHostPoint(point) {
    if (state.points.length && state.points[state.points.length - 1].t >= point.t) return;
    state.points.push(point);
    if (state.points.length > 360) state.points.shift();
    drawCharts();
  }

  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(state.charts)) {
      const box = $("chart-" + name);
      chart.setSize({ width: Math.max(240, box.clientWidth), height: 140 });
    }
  });

  // --- incident page ----------------------------------------------------------------------

  async function loadIncident() {
    const body = await api("/api/incidents/" + incidentId);
    const inc = body.incident;
    document.title = "#" + inc.id + " " + inc.target + " · OpsMedic";
    fill($("inc-title"), [el("span", { className: "inc-id" }, "#" + inc.id + " "), inc.title]);
    fill($("inc-meta"), [badge(inc.status, LEVEL[inc.status]), " ", badge(inc.severity, LEVEL[inc.severity]),
      " " + inc.target + " · " + inc.symptom + " · seen " + inc.count + "× · opened " + when(inc.opened_at) +
      " · updated " + when(inc.updated_at)]);
    renderRca(body.rca);
    renderApprovals(body.approvals || []);
    fill($("inc-timeline"), inc.timeline.slice().reverse().map((t) =>
      el("li", {}, el("span", { className: "muted" }, when(t.ts) + " · " + t.actor + " · "), badge(t.kind, ""), " ", t.text)));
    fill($("inc-runs"), body.runs.map((r) =>
      el("tr", {}, el("td", { className: "clip" }, r.id), el("td", {}, r.kind), el("td", {}, badge(r.status, LEVEL[r.status])),
        el("td", {}, when(r.started_at)), el("td", { className: "clip" }, (r.detail && r.detail.result) || r.error || ""))));
  }

  function renderRca(rca) {
    if (!rca) {
      fill($("inc-rca"), [el("p", { className: "muted" }, "No RCA recorded yet.")]);
      return;
    }
    const evidence = (rca.evidence || []).map((e) => el("li", {}, el("span", { className: "muted" }, e.source + ": "), el("code", {}, e.line)));
    fill($("inc-rca"), [
      el("p", {}, rca.summary),
      el("p", { className: "muted" }, "category " + rca.category + " · confidence " + rca.confidence + " · by " + rca.author +
        " · restart safe: " + (rca.restart_safe ? "yes" : "no")),
      rca.recommendation ? el("p", {}, "Recommendation: " + rca.recommendation) : null,
      evidence.length ? el("ul", { className: "evidence" }, ...evidence) : null,
    ].filter(Boolean));
  }

  function renderApprovals(approvals) {
    const box = $("inc-approval");
    const dash = (state.overview && state.overview.dashboard) || {};
    const canDecide = Boolean(token() && dash.auth && dash.approvals);
    box.hidden = approvals.length === 0;
    fill($("inc-approvals"), approvals.map((a) => {
      const item = el("li", { dataset: { approval: a.id } },
        el("span", {}, (a.action.tool || a.action.action || "action") + " " + (a.action.target || "") +
          " · asked of " + a.approver + " · expires " + new Date(a.expires_at).toLocaleString() + " "));
      if (canDecide) {
        for (const [decision, label, cls] of [["approve", "Approve", "ok"], ["deny", "Deny", "bad"]]) {
          const button = el("button", { type: "button", className: cls, dataset: { decision } }, label);
          button.addEventListener("click", () => decide(a.id, decision));
          item.append(" ", button);
        }
      }
      return item;
    }));
    $("approval-hint").hidden = canDecide;
  }

  async function decide(approvalId, decision) {
    try {
      const body = await api("/api/approvals/" + encodeURIComponent(approvalId), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ decision }),
      });
      const message = body.result && body.result.message;
      $("approval-result").textContent = message || body.decision + " recorded (" + body.actor + ")";
    } catch (err) {
      $("approval-result").textContent = err.message;
    }
    schedule("incident");
  }

  // --- refresh scheduling and the live stream -------------------------------------------

  const LOADERS = {
    overview: loadOverview, incidents: loadIncidents, jobs: loadJobs, audit: loadAudit,
    events: loadEvents, host: loadHostHistory, incident: loadIncident,
  };

  async function run(names) {
    const results = await Promise.allSettled(names.map((n) => LOADERS[n]()));
    const failed = results.find((r) => r.status === "rejected" && !(r.reason instanceof NeedToken));
    if (failed) notice("Could not load part of the page: " + failed.reason.message);
    else if (!results.some((r) => r.status === "rejected")) notice("");
    return results;
  }

  function schedule(...names) {
    for (const n of names) state.pending.add(n);
    if (state.timer) return;
    state.timer = setTimeout(() => {
      const names = Array.from(state.pending);
      state.pending.clear();
      state.timer = null;
      run(names);
    }, 500); // coalesce bursts of events into one refresh per panel
  }

  function panelsFor(event) {
    if (incidentId !== null) return event.incident_id === incidentId || event.source === "action" ? ["incident", "overview"] : [];
    if (event.type === "ingest.batch") return ["jobs", "overview"];
    const names = ["overview", "audit"];
    if (event.type.startsWith("incident.")) names.push("incidents");
    if (event.source === "action" || event.type.startsWith("job") || event.type.startsWith("run")) names.push("jobs");
    return names;
  }

  function onFrame(frame) {
    let type = "message";
    let data = "";
    let id = null;
    for (const line of frame.split("\n")) {
      if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
      else if (line.startsWith("id:")) id = Number(line.slice(3).trim());
    }
    if (id !== null) state.cursor = id;
    if (!data) return;
    const payload = JSON.parse(data);
    if (type === "host") {
      addHostPoint(payload);
      return;
    }
    if (incidentId === null) {
      const list = $("events");
      list.prepend(eventItem(payload));
      while (list.children.length > 50) list.lastChild.remove();
    }
    const names = panelsFor(payload);
    if (names.length) schedule(...names);
  }

  function setLive(on) {
    const live = $("live");
    live.textContent = on ? "live" : "offline";
    live.className = "live " + (on ? "on" : "off");
  }

  // EventSource cannot send an Authorization header, so the stream is read with fetch and
  // parsed here (same text/event-stream format); it reconnects from the last seen cursor.
  async function openStream() {
    for (;;) {
      try {
        const query = state.cursor !== null ? "?cursor=" + state.cursor : "";
        const res = await fetch("/api/stream" + query, { headers: headers({ Accept: "text/event-stream" }), cache: "no-store" });
        if (res.status === 401) {
          showTokenForm(true);
          await new Promise((resolve) => setTimeout(resolve, 3000));
        }
        if (res.ok && res.body) {
          setLive(true);
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              onFrame(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 2);
            }
          }
        }
      } catch (err) {
        // the server went away or the network dropped: fall through and retry
      }
      setLive(false);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  async function refreshAll() {
    if (incidentId !== null) {
      $("incident-page").hidden = false;
      await run(["overview"]); // first: it says whether approve/deny may be offered
      await run(["incident"]);
    } else {
      $("dashboard").hidden = false;
      await run(["overview", "incidents", "jobs", "audit", "events", "host"]);
    }
  }

  refreshAll().then(() => {
    document.body.dataset.ready = "1";
    openStream();
  });
  // Fallback for what does not emit events (tool calls add audit entries only).
  setInterval(() => schedule(...(incidentId !== null ? ["incident"] : ["overview", "audit", "jobs"])), 15000);
})();
