// The campaign dashboard: signs in with an API token (kept in sessionStorage), reads the
// service's JSON with `Authorization: Bearer`, draws the figures as text and as uPlot
// charts, and fetches again when the live feed says the read models moved.
"use strict";

const KEY = "ledger.token";
const state = { token: sessionStorage.getItem(KEY), actor: null, tab: null, position: null,
                live: null, charts: [], refreshing: false, again: false };
const $ = (id) => document.getElementById(id);

// ---- small DOM helpers (text only: data never becomes HTML) ----------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

// Money arrives as a decimal string: grouped for reading, never turned into a float.
function money(text) {
  if (text === null || text === undefined) return "–";
  const [whole, fraction] = String(text).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return fraction ? `${grouped}.${fraction}` : grouped;
}
const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

function kpi(name, label, text, value) {
  return el("div", { class: "kpi" }, el("dt", {}, label),
            el("dd", { "data-figure": name, "data-value": value ?? text }, text));
}

function table(caption, columns, rows, name) {
  const head = el("tr", {}, columns.map(([label, , numeric]) =>
    el("th", { scope: "col", class: numeric ? "n" : null }, label)));
  const body = rows.map((row) => el("tr", {}, columns.map(([, cell, numeric]) =>
    el("td", { class: numeric ? "n" : null }, cell(row)))));
  return el("div", { class: "scroll" }, el("table", { "data-table": name },
    el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body)));
}

// ---- the API ------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, error) { super(error.message); this.status = status; this.code = error.code; }
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` },
                                       cache: "no-store" });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error ? body.error
      : { code: `http_${response.status}`, message: response.statusText };
    throw new ApiError(response.status, error);
  }
  return body;
}

// ---- charts ---------------------------------------------------------------------------
function dropCharts() {
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
}

// Bars start at zero; the x range has half a bucket (`step` seconds) of room each side, so
// the first and last bars are whole. Times are drawn in UTC, as the tables say.
const fromZero = (u, min, max) => [0, max > 0 ? max * 1.1 : 1];

function chart(title, xs, series, { time = true, bars = false, step = 3600 } = {}) {
  const box = el("div", { class: "chart", role: "img",
                          "aria-label": `${title}: the same figures are in the table below` });
  const draw = () => {
    const width = Math.max(box.clientWidth, 240);
    const opts = {
      width, height: Math.round(Math.min(280, Math.max(180, width * 0.45))),
      // From the data, not from uPlot's min/max: with one point on a time scale, uPlot
      // 1.6.32 widens the range by 86,400,000 s (years), not by a day.
      scales: { x: { time, range: () => [xs[0] - step / 2, xs[xs.length - 1] + step / 2] },
                y: { range: fromZero }, y2: { range: fromZero } },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      legend: { show: true },
      axes: [{ space: 60 }, { size: 70 }, ...series.slice(1).map(() => ({ side: 1, grid: { show: false } }))],
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: s.color, fill: bars && i === 0 ? `${s.color}55` : undefined,
        width: 2, scale: i === 0 ? "y" : "y2",
        paths: bars && i === 0 && uPlot.paths && uPlot.paths.bars
          ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
        points: { show: xs.length < 2 },
      }))],
    };
    if (series.length > 1) opts.axes[2].scale = "y2";
    return new uPlot(opts, [xs, ...series.map((s) => s.values)], box);
  };
  requestAnimationFrame(() => {
    if (!box.isConnected || typeof uPlot === "undefined") return;
    const plot = draw();
    state.charts.push(plot);
    new ResizeObserver(() => plot.setSize({ width: Math.max(box.clientWidth, 240),
                                             height: plot.height })).observe(box);
  });
  return el("div", { class: "card" }, el("h3", {}, title), box);
}

// The currency a chart shows: the one with the most GMV (the tables show every currency).
function mainCurrency(totals) {
  const sorted = [...totals].sort((a, b) => Number(b.gmv) - Number(a.gmv));
  return sorted.length ? sorted[0].currency : null;
}
const epoch = (iso) => Date.parse(iso) / 1000;

// ---- the campaign perspective ----------------------------------------------------------
async function campaignView() {
  const select = $("campaign-id");
  const chosen = select.value || new URLSearchParams(location.hash.slice(1)).get("campaign");
  const performance = (id) => api(`/v1/campaigns/${encodeURIComponent(id)}/performance`);
  // Both at once when the campaign is known (a live refresh): one round trip, not two.
  const early = chosen ? performance(chosen).catch((error) => error) : null;
  const campaigns = await api("/v1/campaigns");
  const labels = campaigns.map((c) => [c.campaign_id, `${c.name} (${c.status})`]);
  if (JSON.stringify(labels) !== select.dataset.labels) {  // an open list is left alone
    select.replaceChildren(...labels.map(([id, label]) => el("option", { value: id }, label)));
    select.dataset.labels = JSON.stringify(labels);
  }
  if (!campaigns.length) {
    $("campaign-body").replaceChildren(el("p", { class: "note" }, "No campaigns yet."));
    return;
  }
  const ongoing = campaigns.find((c) => c.status === "ongoing") || campaigns[0];
  select.value = campaigns.some((c) => c.campaign_id === chosen) ? chosen : ongoing.campaign_id;
  const report = early && select.value === chosen ? await early : await performance(select.value);
  if (report instanceof Error) throw report;
  const currency = mainCurrency(report.totals);
  const gmv = report.totals.map((t) => `${money(t.gmv)} ${t.currency}`).join(" · ") || "0";
  const orders = report.totals.reduce((sum, t) => sum + t.orders, 0);
  const rate = report.approval.approval_rate;
  const statuses = Object.entries(report.registrations.by_status);
  const top = [...report.sellers].sort((a, b) => Number(b.gmv) - Number(a.gmv)).slice(0, 10);
  const hours = report.hours.filter((h) => h.currency === currency);
  const days = report.days.filter((d) => d.currency === currency);
  const parts = [
    el("dl", { class: "kpis" },
       kpi("gmv", "GMV", gmv, report.totals.map((t) => `${t.gmv} ${t.currency}`).join(" ")),
       kpi("orders", "Orders", count(orders), orders),
       kpi("approval-rate", "Approval rate",
           rate === null ? "–" : `${(Number(rate) * 100).toFixed(1)} %`, rate ?? ""),
       kpi("registrations", "Registrations", count(report.registrations.total),
           report.registrations.total)),
  ];
  const cards = [];
  if (currency) {
    // A bar stands in the middle of its hour or day.
    cards.push(chart(`GMV per hour (${currency}, UTC) and orders`,
                     hours.map((h) => epoch(h.hour) + 1800), [
      { label: `GMV ${currency}`, color: "#0b63ce", values: hours.map((h) => Number(h.gmv)) },
      { label: "Orders", color: "#e8710a", values: hours.map((h) => h.orders) }], { bars: true }));
    cards.push(chart(`GMV per day (${currency})`, days.map((d) => epoch(`${d.day}T12:00:00Z`)), [
      { label: `GMV ${currency}`, color: "#0b63ce", values: days.map((d) => Number(d.gmv)) },
      { label: "Orders", color: "#e8710a", values: days.map((d) => d.orders) }],
      { bars: true, step: 86400 }));
  } else {
    parts.push(el("p", { class: "note" }, "No performance reported yet."));
  }
  cards.push(el("div", { class: "card" }, table("Registrations by status",
    [["Status", (r) => r[0]], ["Registrations", (r) => count(r[1]), true]], statuses, "statuses")));
  cards.push(el("div", { class: "card" }, table("Top sellers by GMV", [
    ["Seller", (s) => s.seller_id], ["GMV", (s) => money(s.gmv), true],
    ["Currency", (s) => s.currency], ["Orders", (s) => count(s.orders), true]], top, "sellers")));
  cards.push(el("div", { class: "card" }, table("Per day", [
    ["Day", (d) => d.day], ["Currency", (d) => d.currency], ["GMV", (d) => money(d.gmv), true],
    ["Orders", (d) => count(d.orders), true]], report.days, "days")));
  cards.push(el("div", { class: "card" }, table("Per hour (UTC)", [
    ["Hour", (h) => h.hour.replace("T", " ").slice(0, 16)], ["Currency", (h) => h.currency],
    ["GMV", (h) => money(h.gmv), true], ["Orders", (h) => count(h.orders), true]],
    [...report.hours].reverse(), "hours")));
  parts.push(el("div", { class: "cards" }, cards));
  $("campaign-body").replaceChildren(...parts);
}

// ---- a seller's year --------------------------------------------------------------------
async function ytdView() {
  const seller = $("ytd-seller").value.trim();
  const year = $("ytd-year").value;
  if (!seller || !year) return;
  const report = await api(`/v1/sellers/${encodeURIComponent(seller)}/performance/${year}`);
  const currency = mainCurrency(report.totals);
  const months = report.months.filter((m) => m.currency === currency);
  let running = 0;
  const cumulative = months.map((m) => (running += Number(m.gmv)));
  const gmv = report.totals.map((t) => `${money(t.gmv)} ${t.currency}`).join(" · ") || "0";
  const orders = report.totals.reduce((sum, t) => sum + t.orders, 0);
  const cards = [];
  if (currency) {
    cards.push(chart(`Cumulative GMV per month (${currency})`,
      months.map((m) => epoch(`${year}-${String(m.month).padStart(2, "0")}-01T00:00:00Z`)),
      [{ label: `Cumulative GMV ${currency}`, color: "#0b63ce", values: cumulative }],
      { step: 86400 * 30 }));
  }
  cards.push(el("div", { class: "card" }, table("Per month", [
    ["Month", (m) => `${year}-${String(m.month).padStart(2, "0")}`],
    ["Currency", (m) => m.currency], ["GMV", (m) => money(m.gmv), true],
    ["Orders", (m) => count(m.orders), true]], report.months, "months")));
  cards.push(el("div", { class: "card" }, table("Campaigns joined", [
    ["Campaign", (j) => j.campaign_name || j.campaign_id],
    ["Registrations", (j) => count(j.registrations), true]], report.joined, "joined")));
  $("ytd-body").replaceChildren(
    el("dl", { class: "kpis" },
       kpi("ytd-gmv", `GMV ${year}`, gmv, report.totals.map((t) => `${t.gmv} ${t.currency}`).join(" ")),
       kpi("ytd-orders", "Orders", count(orders), orders),
       kpi("campaigns-joined", "Campaigns joined", count(report.campaigns_joined),
           report.campaigns_joined)),
    currency ? "" : el("p", { class: "note" }, "No performance reported this year."),
    el("div", { class: "cards" }, cards));
}

// ---- the review queue -------------------------------------------------------------------
async function reviewView() {
  const data = await api("/dashboard/api/review");
  const people = data.time_to_decide.reviewers;
  $("review-body").replaceChildren(
    el("dl", { class: "kpis" },
       kpi("under-review", "Under review", count(data.queue.total), data.queue.total),
       kpi("median-decide", "Median time to decide", duration(people.median), people.median ?? ""),
       kpi("p90-decide", "90th percentile", duration(people.p90), people.p90 ?? ""),
       kpi("decided", "Decided by reviewers", count(people.decisions), people.decisions),
       kpi("overrides", "Overrides", count(data.time_to_decide.overrides),
           data.time_to_decide.overrides)),
    el("div", { class: "cards" },
       el("div", { class: "card" }, table("Under review per campaign", [
         ["Campaign", (c) => c.campaign_id], ["Under review", (c) => count(c.under_review), true]],
         data.queue.campaigns, "queue-campaigns")),
       el("div", { class: "card" }, table("Waiting registrations (first 50)", [
         ["Registration", (r) => r.registration_id.slice(0, 8)], ["Campaign", (r) => r.campaign_id],
         ["Seller", (r) => r.seller_id], ["Sessions", (r) => count(r.sessions_under_review), true]],
         data.queue.registrations, "queue")),
       el("div", { class: "card" }, table("Latest overrides", [
         ["Decided", (o) => o.decided_at.replace("T", " ").slice(0, 16)],
         ["Reviewer", (o) => o.reviewer_id], ["Seller", (o) => o.seller_id],
         ["Failed", (o) => o.failed_criteria.join(", ")], ["Reason", (o) => o.override_reason]],
         data.overrides, "overrides"))));
}

// ---- navigation, refresh, live feed -------------------------------------------------------
const VIEWS = { campaign: campaignView, ytd: ytdView, review: reviewView };

async function refresh() {
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  try {
    do {
      state.again = false;
      dropCharts();
      await VIEWS[state.tab]();
      $("error").textContent = "";
      document.body.dataset.position = state.position ?? "";
    } while (state.again);
  } catch (error) {
    if (error.status === 401) { signOut("That token is unknown or was revoked."); return; }
    $("error").textContent = `${error.code || "error"}: ${error.message}`;
  } finally {
    state.refreshing = false;
    document.body.dataset.refreshed = String(Date.now());
  }
}

function show(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("nav button")) {
    if (button.dataset.tab === tab) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const name of Object.keys(VIEWS)) $(name).hidden = name !== tab;
  refresh();
}

// The state is announced to screen readers when it changes; the position (which moves
// with every command) is not.
function setLive(text, on, position = null) {
  if ($("live-state").textContent !== text) $("live-state").textContent = text;
  $("live-position").textContent = position === null ? "" : ` · read models at position ${position}`;
  $("live").className = `live ${on ? "on" : "off"}`;
}

// Server-sent events read with fetch(), so the token travels in a header, not in a URL.
async function listen(controller) {
  while (!controller.signal.aborted) {
    try {
      const response = await fetch("/dashboard/api/changes", {
        headers: { Authorization: `Bearer ${state.token}` }, signal: controller.signal,
        cache: "no-store" });
      if (response.status === 401) { signOut("That token is unknown or was revoked."); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      setLive("live updates interrupted: reconnecting…", false);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function onEvent(block) {
  let name = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (name === "unavailable") {
    setLive(`live updates paused: ${JSON.parse(data).message}`, false);
  } else if (name === "moved") {
    const { position } = JSON.parse(data);
    setLive("live", true, position);
    if (position !== state.position) {
      state.position = position;
      refresh();
    }
  }
}

async function signIn(token) {
  state.token = token;
  const actor = await api("/dashboard/api/me");
  sessionStorage.setItem(KEY, token);
  state.actor = actor;
  $("actor").textContent = `${actor.id} (${actor.role})`;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("tabs").hidden = false;
  const seller = actor.role === "seller";
  // A seller reads only their own pages: the API refuses the others, so they are not offered.
  for (const button of document.querySelectorAll("nav button")) {
    button.hidden = seller && button.dataset.tab !== "ytd";
  }
  $("ytd-seller").value = seller ? actor.id : $("ytd-seller").value;
  $("ytd-seller").readOnly = seller;
  $("ytd-year").value = $("ytd-year").value || new Date().getUTCFullYear();
  state.live = new AbortController();
  listen(state.live);
  const wanted = new URLSearchParams(location.hash.slice(1)).get("view");
  show(seller ? "ytd" : (VIEWS[wanted] ? wanted : "campaign"));
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  if (state.live) state.live.abort();
  dropCharts();
  Object.assign(state, { token: null, actor: null, position: null, live: null });
  for (const name of Object.keys(VIEWS)) { $(name).hidden = true; $(`${name}-body`).replaceChildren(); }
  $("campaign-id").replaceChildren();
  delete $("campaign-id").dataset.labels;
  $("who").hidden = true;
  $("tabs").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  setLive("not connected", false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn($("token").value.trim());
      $("token").value = "";
    } catch (error) {
      signOut(error.status === 401 ? "That token is unknown or was revoked."
                                   : `${error.code || "error"}: ${error.message}`);
    }
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => show(button.dataset.tab));
  }
  $("campaign-id").addEventListener("change", refresh);
  $("ytd-form").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  if (state.token) signIn(state.token).catch(() => signOut(""));
  else signOut("");
});
