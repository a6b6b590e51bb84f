"use strict";
// The page's own script (the pages carry none inline). htmx does the requests and swaps;
// this adds what htmx does not: a resolve that needs both choices, a confirmation and an
// undo, the refresh from the change feed, the charts, and a few keys.

const UNDO_SECONDS = 5;
const NEEDS_REASON = new Set(["won_back", "lost"]);

// ---- resolving a case: both choices, a confirmation, then a few seconds to undo ----------

function resolveState(form) {
  const outcome = form.elements.outcome.value;
  const reason = form.elements.reason;
  const takesReason = NEEDS_REASON.has(outcome);
  reason.disabled = outcome !== "" && !takesReason;
  if (reason.disabled) reason.value = "";
  const ready = outcome !== "" && (!takesReason || reason.value !== "");
  form.querySelector("button[type=submit]").disabled = !ready;
  const need = form.querySelector(".need");
  need.hidden = ready;
  need.textContent = outcome === "" ? "Choose the outcome first." : "Choose the reason they gave.";
  return ready;
}

function label(select) {
  return select.options[select.selectedIndex].textContent.split(":")[0].trim().toLowerCase();
}

document.addEventListener("change", (event) => {
  const form = event.target.closest("form[data-resolve]");
  if (form) resolveState(form);
});

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-resolve]");
  if (!form) return;
  event.preventDefault();
  if (!resolveState(form)) return;
  const outcome = form.elements.outcome;
  const reason = form.elements.reason;
  const because = reason.value ? ` because of ${label(reason)}` : "";
  form.querySelector(".confirm-text").textContent =
    `Record ${form.dataset.customer} as ${label(outcome)}${because}?`;
  form.querySelector(".confirm").hidden = false;
  form.querySelector("[data-confirm]").focus();
});

document.addEventListener("click", (event) => {
  const form = event.target.closest("form[data-resolve]");
  if (!form) return;
  if (event.target.matches("[data-cancel]")) {
    form.querySelector(".confirm").hidden = true;
    form.querySelector("button[type=submit]").focus();
  } else if (event.target.matches("[data-confirm]")) {
    form.querySelector(".confirm").hidden = true;
    scheduleResolve(form);
  }
});

let pending = null; // the one resolve waiting out its undo time

function scheduleResolve(form) {
  if (pending) pending.send(); // one at a time: the previous one goes now
  const item = form.closest("li.case");
  const values = Object.fromEntries(new FormData(form).entries());
  const url = form.getAttribute("action");
  const toast = document.getElementById("toast");
  const note = document.createElement("p");
  note.className = "toast";
  const text = document.createElement("span");
  const undo = document.createElement("button");
  undo.type = "button";
  undo.textContent = "Undo";
  note.append(text, " ", undo);
  toast.replaceChildren(note);
  if (item) item.hidden = true;
  let left = UNDO_SECONDS;
  const tick = () => {
    text.textContent = `${form.dataset.customer} will be recorded in ${left} s.`;
  };
  tick();
  const timer = setInterval(() => {
    left -= 1;
    if (left <= 0) send(); else tick();
  }, 1000);
  function send() {
    clearInterval(timer);
    pending = null;
    htmx.ajax("POST", url, {target: "#toast", swap: "innerHTML", values: values});
  }
  undo.addEventListener("click", () => {
    clearInterval(timer);
    pending = null;
    if (item) item.hidden = false;
    text.textContent = `Not recorded: ${form.dataset.customer} is back on the list.`;
    undo.remove();
    form.querySelector("button[type=submit]").focus();
  });
  undo.focus();
  pending = {send: send};
}

// Leaving the page sends what is waiting (an undo can no longer be asked for).
window.addEventListener("pagehide", () => {
  if (!pending) return;
  pending.send();
});

// ---- the change feed: new and changed cases appear without reloading ---------------------

function busy() {
  const cases = document.getElementById("cases");
  return cases !== null && (
    cases.querySelector("details.work-it[open]") !== null ||
    cases.contains(document.activeElement) || pending !== null);
}

async function follow(live) {
  let after = Number(live.dataset.after);
  for (;;) {
    try {
      const response = await fetch(`/ui/changes?after=${after}&wait=25`, {cache: "no-store"});
      if (response.status === 401) { window.location.assign("/ui/login?next=/ui/"); return; }
      if (!response.ok) throw new Error(String(response.status));
      const body = await response.json();
      if (body.changed) {
        after = body.latest;
        if (busy()) live.hidden = false;
        else htmx.trigger(document.body, "radar:refresh");
      }
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
  }
}

// ---- charts (Chart.js, vendored) ----------------------------------------------------------

// Axis amounts, short enough for a phone: "EUR 1.5K".
function money(currency) {
  return (value) => `${currency} ${Number(value).toLocaleString("en", {notation: "compact"})}`;
}

function drawChart(canvas) {
  const data = JSON.parse(canvas.dataset.values);
  const kind = canvas.dataset.chart;
  const currency = canvas.dataset.currency || "";
  let config;
  if (kind === "weekly") {
    config = {
      data: {
        labels: data.labels,
        datasets: [
          {type: "bar", label: "Visits", data: data.visits, yAxisID: "visits",
           backgroundColor: "#3b6fb6"},
          {type: "line", label: `Net spend (${currency})`, data: data.spend, yAxisID: "spend",
           borderColor: "#c2571a", backgroundColor: "#c2571a", pointRadius: 2, tension: 0},
        ],
      },
      options: {
        scales: {
          x: {title: {display: true, text: "Week starting"},
              ticks: {maxTicksLimit: window.innerWidth < 600 ? 5 : 13, maxRotation: 0}},
          visits: {position: "left", beginAtZero: true, title: {display: true, text: "Visits"},
                   ticks: {precision: 0}},
          spend: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                  title: {display: true, text: `Net spend (${currency})`},
                  ticks: {callback: money(currency)}},
        },
      },
    };
  } else if (kind === "rate") {
    config = {
      type: "bar",
      data: {
        labels: data.labels.map((name, i) => data.incomplete[i] ? `${name} (so far)` : name),
        datasets: [{
          label: "Defection rate (%)",
          data: data.rates,
          backgroundColor: data.incomplete.map((open) => open ? "#a9c1e3" : "#3b6fb6"),
        }],
      },
      options: {
        scales: {
          x: {title: {display: true, text: "Month"}},
          y: {beginAtZero: true, title: {display: true, text: "Defected (%)"},
              ticks: {callback: (value) => `${value}%`}},
        },
        plugins: {legend: {display: false}},
      },
    };
  } else if (kind === "reasons") {
    config = {
      type: "bar",
      data: {labels: data.labels,
             datasets: [{label: `Value lost (${currency})`, data: data.values,
                         backgroundColor: "#8a3ea8"}]},
      options: {
        indexAxis: "y",
        scales: {
          x: {beginAtZero: true, title: {display: true, text: `Value lost (${currency})`},
              ticks: {callback: money(currency), maxTicksLimit: 5}},
          y: {title: {display: false}},
        },
        plugins: {legend: {display: false}},
      },
    };
  } else {
    return;
  }
  config.options.maintainAspectRatio = false;
  config.options.animation = false;
  new Chart(canvas, config);
}

// ---- keys: "/" searches, Escape closes what is open --------------------------------------

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select");
  if (event.key === "/" && !typing) {
    const search = document.getElementById("q");
    if (search) { event.preventDefault(); search.focus(); }
  } else if (event.key === "Escape") {
    const open = document.activeElement && document.activeElement.closest("details[open]");
    if (open) {
      for (const confirm of open.querySelectorAll(".confirm")) confirm.hidden = true;
      open.open = false;
      open.querySelector("summary").focus();
    }
  }
});

// On a wide screen the questions are shown open: there is room beside the evidence.
function openQuestions() {
  if (window.innerWidth < 900) return;
  for (const ask of document.querySelectorAll("#cases details.ask")) ask.open = true;
}

document.addEventListener("DOMContentLoaded", () => {
  openQuestions();
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) drawChart(canvas);
  const live = document.getElementById("live");
  if (live) {
    document.getElementById("live-refresh").addEventListener("click", () => {
      live.hidden = true;
      htmx.trigger(document.body, "radar:refresh");
    });
    follow(live);
  }
});

// A message fades after a few seconds (not one that still offers an undo).
let toastTimer = null;
function fadeToast() {
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    if (!pending) document.getElementById("toast").replaceChildren();
  }, 6000);
}

// A refreshed list keeps the reader where they were: the scroll, and the focus on the same
// case's same control.
let kept = null;
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.target.id !== "cases") return;
  const active = document.activeElement;
  const item = active && active.closest("li.case");
  kept = {
    y: window.scrollY,
    customer: item ? item.dataset.customer : null,
    control: item ? [...item.querySelectorAll("a, button, summary, input, select, textarea")].indexOf(active) : -1,
  };
});

// After a swap of the list: the resolve forms start empty and disabled.
document.addEventListener("htmx:afterSwap", (event) => {
  if (event.detail.target.id === "toast") fadeToast();
  openQuestions();
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    if (window.Chart && !Chart.getChart(canvas)) drawChart(canvas);  // a view swapped in after a change
  }
  for (const form of document.querySelectorAll("form[data-resolve]")) resolveState(form);
  const live = document.getElementById("live");
  if (live && !busy()) live.hidden = true;
  if (event.detail.target.id === "cases" && kept) {
    window.scrollTo(0, kept.y);
    const item = kept.customer &&
      [...document.querySelectorAll("li.case")].find((li) => li.dataset.customer === kept.customer);
    const controls = item ? item.querySelectorAll("a, button, summary, input, select, textarea") : [];
    const target = controls[kept.control] || (item && item.querySelector("a.customer"));
    if (target) target.focus({preventScroll: true});
    kept = null;
  }
});
