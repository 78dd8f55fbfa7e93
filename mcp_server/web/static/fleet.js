// OpsMedic dashboard, fleet panel: the instances sharing this store (from their heartbeats),
// and Swarm nodes and services with replica bars when the server has a Swarm backend.
// Draws through app.js's helpers (window.OpsMedic); text only, never innerHTML.
"use strict";

(function () {
  const O = window.OpsMedic;
  const $ = (id) => document.getElementById(id);
  if (!O || !$("fleet") || location.pathname !== "/") return;
  const { el, fill, api, badge, LEVEL, NeedToken } = O;
  const STATE_LEVEL = { live: "ok", silent: "crit", stopped: "" };
  const MAX_BARS = 40; // beyond this the bar shows a count only

  function age(seconds) {
    if (seconds < 90) return Math.round(seconds) + "s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + "m ago";
    return Math.round(seconds / 3600) + "h ago";
  }

  function duties(list) {
    return el("span", { className: "duties" }, ...list.map((d) =>
      el("span", { title: d.detail || d.state },
        badge(d.name + ": " + d.state, d.healthy ? LEVEL[d.state] || "" : "crit"))));
  }

  function instanceRow(i) {
    const name = i.instance + (i.self ? " (this server)" : "");
    const state = i.state === "live" && !i.healthy ? "unhealthy" : i.state;
    return el("tr", { className: i.self ? "self" : null, dataset: { instance: i.instance, state: i.state } },
      el("td", { title: i.holder }, name),
      el("td", {}, badge(state, state === "unhealthy" ? "warn" : STATE_LEVEL[i.state])),
      el("td", { title: i.last_beat }, age(i.age_s) + " (every " + i.interval_s + "s)"),
      el("td", {}, i.version || "-"),
      el("td", {}, i.mode || "-"),
      el("td", {}, duties(i.duties)));
  }

  function replicaBar(running, desired) {
    const total = Math.max(running, desired);
    const bar = el("span", { className: "replicas", title: running + " of " + desired + " running" });
    if (total <= MAX_BARS) {
      for (let n = 0; n < total; n++) {
        bar.append(el("span", { className: "replica " + (n < running ? "up" : "down") }));
      }
    }
    return bar;
  }

  function serviceRow(s) {
    const running = Number(s.running) || 0;
    const desired = Number(s.desired) || 0;
    const level = running >= desired ? "ok" : running ? "warn" : "crit";
    return el("tr", { dataset: { service: s.name } },
      el("td", {}, s.name),
      el("td", {}, s.mode || "-"),
      el("td", {}, badge(running + "/" + desired, level)),
      el("td", {}, replicaBar(running, desired)));
  }

  function nodeRow(n) {
    const level = n.state === "ready" && n.availability === "active" ? "ok" : "warn";
    return el("tr", { dataset: { node: n.name } },
      el("td", {}, n.name + (n.leader ? " (leader)" : "")),
      el("td", {}, n.role || "-"),
      el("td", {}, badge(n.state || "?", level)),
      el("td", {}, n.availability || "-"));
  }

  async function loadFleet() {
    let f;
    try {
      f = await api("/api/fleet");
    } catch (err) {
      if (!(err instanceof NeedToken)) $("fleet-summary").textContent = "fleet: " + err.message;
      return;
    }
    const silent = f.instances.filter((i) => i.state === "silent").length;
    const live = f.instances.filter((i) => i.state === "live").length;
    const summary = $("fleet-summary");
    summary.textContent = live + " live" + (silent ? ", " + silent + " silent" : "");
    summary.className = "badge " + (silent ? "crit" : "ok");
    fill($("fleet-instances"), f.instances.map(instanceRow));
    $("fleet-swarm").hidden = !f.swarm;
    fill($("fleet-nodes"), f.nodes.map(nodeRow));
    fill($("fleet-services"), f.services.map(serviceRow));
    $("fleet").dataset.ready = "1";
  }

  loadFleet();
  setInterval(loadFleet, 5000);
})();
