// agentaudit ui: live updates for the runs list and a running run's page.
// No inline script anywhere (the Content-Security-Policy forbids it); recorded text
// arrives either as server-escaped HTML or as JSON set with textContent, never as
// markup built here.
"use strict";

const POLL_MS = 1500;

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${response.status} from ${url}`);
  return response.json();
}

function setStatus(cell, status) {
  cell.textContent = status;
  cell.className = `badge st-${status}`;
}

// -- the runs page ---------------------------------------------------------------------

function watchRuns(table) {
  async function tick() {
    const rows = Array.from(table.querySelectorAll('tr[data-status="running"]'));
    if (rows.length) {
      const params = new URLSearchParams();
      for (const row of rows) params.append("id", row.dataset.run);
      try {
        const runs = await getJSON(`/api/runs/live?${params}`);
        for (const run of runs) {
          const row = rows.find((r) => r.dataset.run === run.id);
          if (!row) continue;
          row.dataset.status = run.status;
          for (const cell of row.querySelectorAll("[data-cell]")) {
            const key = cell.dataset.cell;
            if (key === "status") setStatus(cell, run.status);
            else if (key in run) cell.textContent = run[key];
          }
        }
      } catch (err) {
        console.debug("agentaudit: live update failed", err);
      }
    }
    const newest = table.dataset.newest;
    if (newest) {
      try {
        const url = `${table.dataset.newerUrl}${table.dataset.newerUrl.includes("?") ? "&" : "?"}after=${encodeURIComponent(newest)}`;
        const { newer } = await getJSON(url);
        const banner = document.getElementById("newer");
        if (newer > 0) {
          banner.replaceChildren();
          const a = document.createElement("a");
          a.href = window.location.pathname + window.location.search;
          a.textContent = `${newer} new run${newer === 1 ? "" : "s"}: show`;
          banner.append(a);
          banner.hidden = false;
        }
      } catch (err) {
        console.debug("agentaudit: new-run check failed", err);
      }
    }
    setTimeout(tick, POLL_MS);
  }
  setTimeout(tick, POLL_MS);

  // Compare takes two runs: ticking a third unticks the oldest tick.
  const ticked = [];
  table.addEventListener("change", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.name !== "run") return;
    if (box.checked) {
      ticked.push(box);
      while (ticked.length > 2) ticked.shift().checked = false;
    } else {
      const at = ticked.indexOf(box);
      if (at >= 0) ticked.splice(at, 1);
    }
  });
}

// -- one run ---------------------------------------------------------------------------

function watchRun(holder) {
  async function tick() {
    const body = holder.querySelector(".run-body");
    if (!body) return;
    let state;
    try {
      state = await getJSON(`${holder.dataset.liveUrl}&after=${encodeURIComponent(body.dataset.last || "0")}`);
    } catch (err) {
      console.debug("agentaudit: live update failed", err);
      setTimeout(tick, POLL_MS * 2);
      return;
    }
    if (state.version !== body.dataset.version) {
      try {
        const response = await fetch(holder.dataset.bodyUrl, { credentials: "same-origin", cache: "no-store" });
        const html = await response.text();
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.querySelector(".run-body");
        if (fresh) {
          const open = new Set(Array.from(body.querySelectorAll("details[open][data-anchor]"), (d) => d.dataset.anchor));
          const closedIo = new Set(Array.from(body.querySelectorAll("details.io:not([open]) > summary"), (s) => s.textContent));
          for (const d of fresh.querySelectorAll("details[data-anchor]")) d.open = open.has(d.dataset.anchor);
          for (const s of fresh.querySelectorAll("details.io > summary")) if (closedIo.has(s.textContent)) s.parentElement.open = false;
          body.replaceWith(document.adoptNode(fresh));
        }
      } catch (err) {
        console.debug("agentaudit: refresh failed", err);
      }
    }
    if (state.status === "running") setTimeout(tick, POLL_MS);
  }
  const body = holder.querySelector(".run-body");
  if (body && body.dataset.status === "running") setTimeout(tick, POLL_MS);
}

async function fillCount(cell) {
  try {
    const { total, text } = await getJSON(cell.dataset.countUrl);
    cell.textContent = text;
    cell.dataset.total = String(total);
  } catch (err) {
    cell.textContent = "?";
    console.debug("agentaudit: count failed", err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const total = document.getElementById("total");
  if (total && total.dataset.countUrl) fillCount(total);
  const runs = document.getElementById("runs");
  if (runs) watchRuns(runs);
  const live = document.getElementById("run-live");
  if (live) watchRun(live);
});
