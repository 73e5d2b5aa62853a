// The admin page's script: live refresh (server-sent events carrying the new HTML, plus a
// slow poll for ages and broker figures), filters, timelines and actions. The server renders all HTML; this only
// swaps it in. No framework, no build step.
"use strict";
(function () {
  const base = document.querySelector('meta[name="base"]').content;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const live = document.getElementById("live");
  const answer = document.getElementById("answer");
  const timeline = document.getElementById("timeline");
  const liveStatus = document.getElementById("live-status");
  const filters = {
    tenant: document.getElementById("f-tenant"),
    state: document.getElementById("f-state"),
    text: document.getElementById("f-text"),
  };
  let openConnector = null;
  let refreshing = null;

  function applyFilters() {
    const tenants = new Set();
    const text = filters.text.value.trim().toLowerCase();
    for (const row of live.querySelectorAll("tr.connector")) {
      tenants.add(row.dataset.tenant);
      const shown =
        (!filters.tenant.value || row.dataset.tenant === filters.tenant.value) &&
        (!filters.state.value || row.dataset.state === filters.state.value) &&
        (!text || row.textContent.toLowerCase().includes(text));
      row.hidden = !shown;
    }
    const chosen = filters.tenant.value;
    const known = new Set([...filters.tenant.options].map((o) => o.value));
    for (const tenant of [...tenants].sort()) {
      if (!known.has(tenant)) filters.tenant.add(new Option(tenant, tenant));
    }
    filters.tenant.value = chosen;
  }

  // The live part, as the server rendered it; then its charts (charts.js, uPlot). A chart
  // whose data did not change is kept as it is, hovered tooltip included: the poll every
  // 5 s would otherwise redraw it under the cursor.
  function swap(html) {
    const kept = new Map();
    for (const figure of live.querySelectorAll("figure.chart[data-chart]")) {
      kept.set(figure.dataset.chart, figure);
    }
    // An outage a user opened stays open across refreshes.
    const opened = new Set(
      [...live.querySelectorAll("details.outage[open]")].map((d) => d.dataset.outage)
    );
    live.innerHTML = html;
    for (const details of live.querySelectorAll("details.outage")) {
      if (opened.has(details.dataset.outage)) details.open = true;
    }
    for (const figure of live.querySelectorAll("figure.chart[data-chart]")) {
      const same = kept.get(figure.dataset.chart);
      if (same) figure.replaceWith(same);
    }
    applyFilters();
    window.crCharts.drawAll(live);
  }

  // A change that arrives while a refresh is in flight asks for one more refresh after it:
  // the response in flight may predate the change.
  let again = false;
  async function refresh() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      try {
        do {
          again = false;
          const response = await fetch(base + "/fragment", { credentials: "same-origin" });
          if (response.status === 401) return window.location.assign(base + "/login");
          if (response.ok) swap(await response.text());
          if (openConnector) await showTimeline(openConnector);
        } while (again);
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  async function showTimeline(connectorId) {
    openConnector = connectorId;
    const response = await fetch(base + "/timeline?id=" + encodeURIComponent(connectorId), {
      credentials: "same-origin",
    });
    timeline.innerHTML = await response.text();
  }

  function say(text, kind) {
    answer.textContent = text;
    answer.className = kind;
  }

  async function act(button) {
    const action = button.dataset.action;
    const target = button.dataset.target;
    const body = { action: action, target: target };
    if (action === "SILENCE") {
      const minutes = window.prompt("Silence notifications of " + target + " for how many minutes?", "60");
      if (!minutes) return;
      body.minutes = Number(minutes);
    }
    // one click acts on every connector of an outage: ask first
    if (target.startsWith("outage:") && action !== "ACKNOWLEDGE") {
      const verb = action === "RECOVER" ? "Recover every failing connector of " : "Resolve ";
      if (!window.confirm(verb + target + "?")) return;
    }
    say(action.toLowerCase() + " " + target + ": waiting for the decider's answer…", "pending");
    let reply;
    try {
      const response = await fetch(base + "/api/actions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
      });
      reply = await response.json();
    } catch (error) {
      return say(action.toLowerCase() + " " + target + ": refused: " + error, "refused");
    }
    const what = action.toLowerCase() + " " + target;
    if (reply.error) return say(what + ": refused: " + reply.error, "refused");
    if (reply.verdict === "rejected") return say(what + ": rejected: " + reply.reason, "rejected");
    const events = reply.events.map((e) => e.type).join(", ");
    say(what + ": accepted as " + reply.actor + " (" + events + ")", "accepted");
    refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.act");
    if (button) {
      event.stopPropagation();
      return act(button);
    }
    const row = event.target.closest(
      "tr.connector, #incidents tr[data-connector], li.outage-member[data-connector]"
    );
    if (row) showTimeline(row.dataset.connector).then(() => timeline.scrollIntoView());
  });
  document.addEventListener("keydown", (event) => {
    const row =
      event.target.closest && event.target.closest("tr.connector, li.outage-member");
    if (row && event.key === "Enter") {
      showTimeline(row.dataset.connector).then(() => timeline.scrollIntoView());
    }
  });
  for (const control of Object.values(filters)) control.addEventListener("input", applyFilters);

  // Each change carries the new live part, rendered by the server for this user.
  const stream = new EventSource(base + "/events");
  stream.addEventListener("change", (event) => {
    swap(JSON.parse(event.data));
    if (openConnector) showTimeline(openConnector);
  });
  stream.addEventListener("open", () => (liveStatus.textContent = "live"));
  stream.addEventListener("error", () => (liveStatus.textContent = "reconnecting…"));
  // Ages, dead letters and lag move without audit events: a slow poll keeps them current.
  setInterval(refresh, 5000);
  applyFilters();
  window.crCharts.drawAll(live);
})();
