// The appliance's status page: reads the admin listener's own JSON (status, lag-history,
// jobs) and starts the same resync and verify jobs as the command line. No library.
"use strict";

const REFRESH_MS = 2000;
const JOB_POLL_MS = 400;
const SPARK_WIDTH = 160;
const SPARK_HEIGHT = 28;
const jobs = new Map();          // job id -> {job, element}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

async function call(method, url) {
  const response = await fetch(url, {method, cache: "no-store", credentials: "same-origin"});
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok && !(url === "readyz" && response.status === 503)) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(`${method} ${url}: ${response.status} ${message}`);
  }
  return body;
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function lagText(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

function number(value) {
  return value === null || value === undefined ? "-" : String(value);
}

function spark(points) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", SPARK_WIDTH);
  svg.setAttribute("height", SPARK_HEIGHT);
  svg.setAttribute("viewBox", `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
  const base = document.createElementNS(NS, "line");
  base.setAttribute("x1", 0); base.setAttribute("x2", SPARK_WIDTH);
  base.setAttribute("y1", SPARK_HEIGHT - 1); base.setAttribute("y2", SPARK_HEIGHT - 1);
  svg.append(base);
  if (points.length) {
    const now = Date.now() / 1000;
    const span = 300;                      // seconds shown
    const top = Math.max(1, ...points.map(p => p[1]));
    const coords = points.map(([t, lag]) => {
      const x = SPARK_WIDTH * (1 - Math.min(span, now - t) / span);
      const y = (SPARK_HEIGHT - 2) * (1 - lag / top) + 1;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", coords.join(" "));
    svg.append(line);
    const title = document.createElementNS(NS, "title");
    title.textContent = `lag over the last ${span / 60} minutes, top of the chart ${top.toFixed(1)} s`;
    svg.append(title);
  }
  return svg;
}

function serverCounts(cell) {
  if (!cell.servers && cell.flavors) return ["-", "-"];
  if ("servers_live" in cell) return [number(cell.servers_live), number(cell.servers_deleted)];
  return [number(cell.servers), "?"];
}

function renderCells(status, history) {
  const body = document.querySelector("#cells tbody");
  const rows = status.cells.map(cell => {
    const [live, deleted] = serverCounts(cell);
    const points = (history.cells || {})[cell.cell] || [];
    return el("tr", {id: `cell-${cell.cell}`, "data-state": cell.state},
      el("td", {class: "name", title: cell.auth === "none"
                  ? "feed and control not authenticated (no key_file)"
                  : `feed and control sealed (${cell.auth || "?"})`},
         cell.cell, cell.auth === "none" ? el("span", {class: "auth-none"}, " no key") : null),
      el("td", {class: "state"}, el("span", {class: `badge state-${cell.state}`}, cell.state)),
      el("td", {}, when(cell.state_since)),
      el("td", {title: cell.epoch || ""}, (cell.epoch || "-").slice(0, 8)),
      el("td", {class: "num seq"}, number(cell.seq)),
      el("td", {class: "num head"}, number(cell.head)),
      el("td", {class: "num lag"}, lagText(cell.lag_ms)),
      el("td", {class: "chart"}, spark(points)),
      el("td", {class: "num servers"}, live),
      el("td", {class: "num deleted"}, deleted),
      el("td", {class: "num flavors"}, cell.flavors ? number(cell.flavors) : "-"),
      el("td", {class: "num dead"}, number(cell.dead_letters)),
      el("td", {class: "error"}, cell.error || ""),
      el("td", {class: "buttons"}, el("div", {class: "actions"},
        el("button", {type: "button", class: "resync", onclick: () => start("resync", cell.cell)},
           "Resync"),
        el("button", {type: "button", class: "verify", onclick: () => start("verify", cell.cell)},
           "Verify"))));
  });
  body.replaceChildren(...rows);
  if (!rows.length) {
    body.append(el("tr", {}, el("td", {colspan: 14, class: "quiet"},
                                status.ingest_error || "no cells reported")));
  }
}

function renderProcesses(status) {
  const body = document.querySelector("#processes tbody");
  body.replaceChildren(...(status.processes || []).map(p =>
    el("tr", {id: `process-${p.name.replace(/\s+/g, "-")}`},
      el("td", {}, p.name), el("td", {}, p.role), el("td", {class: "num"}, number(p.pid)),
      el("td", {}, p.state), el("td", {class: "num restarts"}, number(p.restarts)),
      el("td", {}, when(p.started)))));
}

function renderHeader(status, ready) {
  const badge = document.getElementById("ready");
  badge.textContent = ready && ready.ready ? "ready" : "not ready";
  badge.className = `badge ${ready && ready.ready ? "ready" : "not-ready"}`;
  badge.title = ready && ready.reasons ? ready.reasons.join("; ") : "";
  const ingest = status.ingest || {};
  document.getElementById("summary").textContent = status.ingest_error
    ? `ingest: ${status.ingest_error}`
    : `${number(ingest.events_applied)} events applied, ${number(ingest.dead_letters)} dead letters`;
  document.getElementById("updated").textContent = `updated ${when(status.generated_at)} UTC`;
}

function banner(message) {
  const node = document.getElementById("banner");
  node.hidden = !message;
  node.textContent = message || "";
}

async function refresh() {
  try {
    const [status, history, ready] = await Promise.all(
      [call("GET", "status"), call("GET", "lag-history"), call("GET", "readyz")]);
    renderHeader(status, ready);
    renderCells(status, history);
    renderProcesses(status);
    banner(null);
  } catch (error) {
    banner(`Cannot read the status: ${error.message}`);
  }
}

function jobSummary(job) {
  const cells = (job.result && job.result.cells) || {};
  if (job.kind !== "verify" || job.state !== "done") return "";
  return Object.entries(cells).map(([name, found]) =>
    `${name}: ${(found.differing || []).length} differing, ${found.repaired || 0} repaired`)
    .join(", ");
}

function renderJob(entry) {
  const {job} = entry;
  const progress = el("progress", {max: String(job.total || 1), value: String(job.done || 0)});
  const took = job.finished_at ? ` in ${(job.finished_at - job.started_at).toFixed(1)} s` : "";
  const node = el("li", {id: `job-${job.id}`, "data-state": job.state},
    el("span", {}, `${job.kind} ${(job.cells || []).join(", ") || "all cells"}`),
    progress,
    el("span", {class: "count"}, `${job.done || 0}/${job.total || 0}`),
    el("span", {class: `job-state job-${job.state}`}, job.state + took),
    el("span", {class: job.error ? "job-failed" : "quiet"}, job.error || jobSummary(job)));
  if (entry.element) entry.element.replaceWith(node);
  else document.getElementById("jobs").prepend(node);
  entry.element = node;
  document.getElementById("no-jobs").hidden = true;
}

async function follow(entry) {
  while (entry.job.state === "running") {
    await new Promise(resolve => setTimeout(resolve, JOB_POLL_MS));
    try {
      entry.job = (await call("GET", `jobs/${encodeURIComponent(entry.job.id)}`)).job;
    } catch (error) {
      banner(`Job ${entry.job.id}: ${error.message}`);
      return;
    }
    renderJob(entry);
  }
  refresh();
}

async function start(kind, cell) {
  const query = cell ? `?cell=${encodeURIComponent(cell)}` : "";
  try {
    const job = (await call("POST", `${kind}${query}`)).job;
    const entry = {job, element: null};
    jobs.set(job.id, entry);
    renderJob(entry);
    follow(entry);
  } catch (error) {
    banner(error.message);
  }
}

document.getElementById("resync-all").addEventListener("click", () => start("resync", null));
document.getElementById("verify-all").addEventListener("click", () => start("verify", null));
refresh();
setInterval(refresh, REFRESH_MS);
