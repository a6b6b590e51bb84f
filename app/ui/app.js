"use strict";
// The dashboard's script, served from /ui/app.js: the page itself carries no script to run.
// The page's configuration, in a JSON block that is data, never run.
const CONFIG = JSON.parse(document.getElementById("radar-config").textContent);
const REASONS = CONFIG.reasons;
const OUTCOMES = ["won_back", "lost", "not_a_defection", "not_worth_retaining"];
let key = sessionStorage.getItem("radar-key") || "";

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || body.title || response.status);
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function picker(options) {
  const select = document.createElement("select");
  for (const option of options) select.add(new Option(option.replaceAll("_", " "), option));
  return select;
}

async function act(alert, action, body) {
  try {
    await api(`/v1/alerts/${alert.id}/${action}`, {method: "POST", body: JSON.stringify(body)});
    await refresh();
  } catch (error) {
    document.getElementById("error").textContent = error.message;
  }
}

function renderAlerts(items) {
  const tbody = document.querySelector("#alerts tbody");
  tbody.replaceChildren();
  for (const alert of items) {
    const row = tbody.insertRow();
    row.dataset.alertId = alert.id;
    cell(row, alert.customer_id);
    cell(row, alert.rule.replaceAll("_", " "));
    cell(row, alert.severity, alert.severity);
    cell(row, Number(alert.value_at_risk).toFixed(2), "num");
    cell(row, alert.opened_at.slice(0, 10));
    cell(row, alert.status, "status");
    const actions = row.insertCell();
    if (alert.status !== "acknowledged") {
      const ack = document.createElement("button");
      ack.textContent = "Acknowledge";
      ack.className = "acknowledge";
      ack.onclick = () => act(alert, "acknowledge", {});
      actions.append(ack, " ");
    }
    const outcome = picker(OUTCOMES);
    const reason = picker(REASONS);
    const resolve = document.createElement("button");
    resolve.textContent = "Resolve";
    resolve.className = "resolve";
    resolve.onclick = () => {
      const body = {outcome: outcome.value};
      if (outcome.value === "won_back" || outcome.value === "lost") body.reason = reason.value;
      act(alert, "resolve", body);
    };
    actions.append(outcome, " ", reason, " ", resolve);
  }
}

function svg(tag, attributes, text) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function renderRate(rows) {
  const chart = document.getElementById("rate");
  chart.replaceChildren();
  const width = 400, height = 150, step = rows.length > 1 ? width / (rows.length - 1) : 0;
  const top = Math.max(0.01, ...rows.map((r) => r.rate || 0));
  const points = rows.map((r, i) => `${10 + i * step},${height - ((r.rate || 0) / top) * (height - 20)}`);
  chart.append(svg("polyline", {points: points.join(" "), fill: "none", stroke: "#1f6feb", "stroke-width": 2}));
  rows.forEach((r, i) => chart.append(svg("text", {x: 10 + i * step, y: height + 20, "text-anchor": "middle"}, r.period_start.slice(2, 7))));
}

function renderReasons(rows) {
  const chart = document.getElementById("reasons");
  chart.replaceChildren();
  const counts = {};
  for (const row of rows) counts[row.reason] = (counts[row.reason] || 0) + row.alerts;
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, 8);
  const top = Math.max(1, ...entries.map((e) => e[1]));
  entries.forEach(([reason, count], i) => {
    chart.append(svg("rect", {x: 140, y: 5 + i * 21, width: (count / top) * 260, height: 16, fill: "#8250df"}));
    chart.append(svg("text", {x: 135, y: 17 + i * 21, "text-anchor": "end"}, reason.replaceAll("_", " ")));
    chart.append(svg("text", {x: 145 + (count / top) * 260, y: 17 + i * 21}, count));
  });
}

async function refresh() {
  document.getElementById("error").textContent = "";
  const params = "status=open&status=acknowledged&sort=-value_at_risk&limit=50";
  const [alerts, rate, reasons] = await Promise.all([
    api("/v1/alerts?" + params),
    api("/v1/reports/defection-rate?period=month"),
    api("/v1/reports/reasons"),
  ]);
  renderAlerts(alerts.items);
  renderRate(rate.rows.filter((r) => r.store_id === null));
  renderReasons(reasons.rows);
}

document.getElementById("connect").onsubmit = async (event) => {
  event.preventDefault();
  key = document.getElementById("key").value.trim();
  sessionStorage.setItem("radar-key", key);
  try { await refresh(); } catch (error) { document.getElementById("error").textContent = error.message; }
};
if (key) refresh().catch((error) => { document.getElementById("error").textContent = error.message; });
