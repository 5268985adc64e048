// The calls dashboard: polls GET /calls (JSON) and draws the selected call's latency waterfall
// from GET /calls/{id}/trace as inline SVG. No libraries: the page must work offline.
"use strict";

const REFRESH_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

// Bars of an utterance row: [key, legend label, from step, to step, derived field].
const SEGMENTS = [
  ["pool", "pool wait", "text_split", "pool_wait_done", "pool_wait_ms"],
  ["tts", "TTS first byte (request → first audio)", "request_sent", "first_audio",
    "tts_first_byte_ms"],
  ["bridge", "bridge overhead (first audio → first frame)", "first_audio", "first_frame_sent",
    "bridge_overhead_ms"],
  ["send", "sending (first frame → last frame)", "first_frame_sent", "last_frame_sent",
    "send_ms"],
  ["playout", "playout lag (last frame → playout finished)", "last_frame_sent",
    "playout_finished", "playout_lag_ms"],
];
const CALL_STEPS = [
  ["webhook_answered", "webhook answered"],
  ["stream_connected", "stream connected"],
  ["start_received", "start received"],
  ["ended", "call ended"],
];
const DERIVED = [
  ["time_to_first_audio_ms", "time to first audio"],
  ["pool_wait_ms", "pool wait"],
  ["tts_first_byte_ms", "TTS first byte"],
  ["bridge_overhead_ms", "bridge overhead"],
  ["synthesis_ms", "synthesis"],
  ["send_ms", "sending"],
  ["playout_lag_ms", "playout lag"],
  ["total_ms", "total"],
];

const LAYOUT = {
  labelWidth: 270, right: 24, axisHeight: 40, stepRow: 20, uttRow: 38, bar: 14, gap: 10,
  textChars: 34, tickPx: 90, titleGap: 24,
};
// The waterfall is drawn as wide as its box, so the whole call shows on any screen; below
// NARROW_PX (a phone) its labels take less room. Under MIN_WIDTH_PX it scrolls in its box.
const NARROW_PX = 560;
const NARROW = { labelWidth: 140, textChars: 14, tickPx: 64, titleGap: 10 };
const MIN_WIDTH_PX = 300;

const state = {
  selected: decodeURIComponent(location.hash.slice(1)) || null, live: false, trace: null,
};

let drawnWidth = null; // the waterfall box's width when last drawn

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = null) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function fmtMs(v) {
  if (v === null || v === undefined) return "—";
  return v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US");
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = ms / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function fmtStarted(epochS) {
  if (!epochS) return "—";
  const d = new Date(epochS * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

function truncate(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    // The session expired: log in again and come back here.
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
    throw new Error("not logged in");
  }
  if (!response.ok) {
    const err = new Error(`${url}: HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return response.json();
}

// ---- calls table -----------------------------------------------------------------------------

function renderCalls(data) {
  const calls = [...data.live, ...data.recent];
  const body = $("calls").tBodies[0];
  const focused = document.activeElement?.dataset?.callId;
  body.replaceChildren(...calls.map(callRow));
  $("no-calls").hidden = calls.length > 0;
  if (focused) body.querySelector(`tr[data-call-id="${CSS.escape(focused)}"]`)?.focus();
  $("status").textContent =
    `${data.live.length} live · ${data.recent.length} recent · updated ` +
    new Date().toLocaleTimeString();
  $("status").classList.remove("error");
}

function callRow(call) {
  const tr = el("tr", { "data-call-id": call.call_id, tabindex: "0" });
  if (call.call_id === state.selected) tr.classList.add("selected");
  const duration = call.live
    ? fmtDuration(Date.now() - call.started_at * 1000)
    : fmtDuration(call.duration_ms);
  const cells = [
    [call.call_id, "id"],
    [call.provider, ""],
    [fmtStarted(call.started_at), ""],
    [duration, "num"],
    [String(call.utterances), "num"],
    [call.first_ttfa_ms === null ? "—" : `${fmtMs(call.first_ttfa_ms)} ms`, "num"],
    [String(call.barge_ins), "num"],
    [call.live ? "live" : (call.end_reason ?? "—"), call.live ? "live" : ""],
  ];
  for (const [text, cls] of cells) tr.append(el("td", cls ? { class: cls } : {}, text));
  tr.addEventListener("click", () => select(call.call_id));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(call.call_id); }
  });
  return tr;
}

function select(callId) {
  state.selected = callId;
  history.replaceState(null, "", `#${encodeURIComponent(callId)}`);
  for (const tr of $("calls").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.callId === callId);
  }
  refreshDetail().catch(showError);
}

// ---- waterfall -------------------------------------------------------------------------------

function niceStep(range, ticks) {
  const raw = range / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw);
}

function traceEnd(trace) {
  const times = Object.values(trace.steps_ms);
  for (const u of trace.utterance_traces) times.push(...Object.values(u.steps_ms));
  return Math.max(100, ...times.filter((t) => t !== null));
}

function segmentEnd(utt, key, to) {
  // An interrupted utterance stops sending at the interruption, not at a last frame.
  return utt.steps_ms[to] ?? (key === "send" ? utt.steps_ms.interrupted : undefined);
}

function renderLegend() {
  const items = [
    ["span", "utterance span (text received → done)"],
    ...SEGMENTS.map(([key, label]) => [key, label]),
    ["synth", "synthesis (request → complete)"],
    ["interrupted", "interrupted"],
    ["callstep", "call step"],
  ];
  $("legend").replaceChildren(...items.map(([key, label]) => {
    const li = el("li");
    li.append(el("span", { class: `swatch seg-${key}`, "aria-hidden": "true" }), label);
    return li;
  }));
}

function layoutFor(width) {
  return width < NARROW_PX ? { ...LAYOUT, ...NARROW, narrow: true } : { ...LAYOUT, narrow: false };
}

function renderWaterfall(trace) {
  const holder = $("waterfall");
  const width = Math.max(MIN_WIDTH_PX, holder.clientWidth);
  const L = layoutFor(width);
  const plotLeft = L.labelWidth;
  const plotWidth = width - plotLeft - L.right;
  const step = niceStep(traceEnd(trace), Math.max(2, Math.floor(plotWidth / L.tickPx)));
  const domain = Math.ceil(traceEnd(trace) / step) * step;
  const x = (ms) => plotLeft + (ms / domain) * plotWidth;
  const utts = trace.utterance_traces;
  const callTop = L.axisHeight;
  const uttTop = callTop + CALL_STEPS.length * L.stepRow + L.gap;
  const height = uttTop + utts.length * L.uttRow + 8;

  const svg = el("svg:svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Latency waterfall of call ${trace.call_id}`,
  });

  // Axis: ticks and grid lines in ms from the call's first step.
  const axis = el("svg:g", { class: "axis" });
  axis.append(el("svg:text", { x: plotLeft - L.titleGap, y: 16, class: "axis-title",
    "text-anchor": "end" }, "ms from call start"));
  for (let t = 0; t <= domain + 1e-9; t += step) {
    axis.append(
      el("svg:line", { x1: x(t), x2: x(t), y1: 22, y2: height - 4, class: "grid" }),
      el("svg:text", { x: x(t), y: 16, "text-anchor": "middle", class: "tick" },
        t.toLocaleString("en-US", { maximumFractionDigits: 1 })),
    );
  }
  axis.append(el("svg:line", { x1: plotLeft, x2: plotLeft + plotWidth, y1: 22, y2: 22,
    class: "axis-line" }));
  svg.append(axis);

  // Call-level steps, one thin row each, on top.
  CALL_STEPS.forEach(([name, label], i) => {
    const t = trace.steps_ms[name];
    const y = callTop + i * L.stepRow + L.stepRow / 2;
    const g = el("svg:g", { class: "call-step", "data-step": name });
    g.append(el("svg:text", { x: plotLeft - 10, y: y + 4, "text-anchor": "end",
      class: "step-label" }, label));
    if (t !== undefined && t !== null) {
      const cx = x(t);
      g.append(el("svg:path", { d: `M${cx} ${y - 6}l6 6l-6 6l-6 -6z`, class: "marker seg-callstep" }));
      const nearEnd = cx > plotLeft + plotWidth * 0.85;
      g.append(el("svg:text", { x: nearEnd ? cx - 10 : cx + 10, y: y + 4,
        "text-anchor": nearEnd ? "end" : "start", class: "step-value" }, `${fmtMs(t)} ms`));
    }
    svg.append(g);
  });
  svg.append(el("svg:line", { x1: 8, x2: width - 8, y1: uttTop - L.gap / 2,
    y2: uttTop - L.gap / 2, class: "separator" }));

  utts.forEach((utt, i) => svg.append(utteranceRow(utt, uttTop + i * L.uttRow, x, width, L)));
  holder.replaceChildren(svg);
  drawnWidth = holder.clientWidth;
}

function utteranceRow(utt, top, x, width, L) {
  const g = el("svg:g", {
    class: `utt outcome-${utt.outcome}${utt.index % 2 ? "" : " alt"}`, "data-index": utt.index,
  });
  const mid = top + L.uttRow / 2;
  g.append(el("svg:rect", { x: 0, y: top, width, height: L.uttRow, class: "row-bg" }));
  g.append(el("svg:text", { x: 10, y: mid - 3, class: "utt-text" },
    `#${utt.index} ${truncate(utt.text.trim(), L.textChars)}`));
  g.append(el("svg:text", { x: 10, y: mid + 11, class: "utt-sub" },
    `${utt.outcome} · ${L.narrow ? "" : "TTFA "}${fmtMs(utt.time_to_first_audio_ms)} ms`));

  const s = utt.steps_ms;
  const times = Object.values(s).filter((t) => t !== null);
  g.append(el("svg:line", { x1: x(Math.min(...times)), x2: x(Math.max(...times)),
    y1: mid - 1, y2: mid - 1, class: "seg-span span" }));

  const bars = [];
  for (const [key, label, from, to, derived] of SEGMENTS) {
    const a = s[from];
    const b = segmentEnd(utt, key, to);
    if (a === undefined || b === undefined) continue;
    // At least 3 px, so a sub-millisecond step (a warm pool's wait) still shows.
    const w = Math.max(3, x(b) - x(a));
    const bar = el("svg:rect", {
      x: x(a), y: mid - L.bar / 2 - 1, width: w, height: L.bar,
      class: `bar seg-${key}`, "data-step": key, rx: 1.5,
      "aria-label": `${label}: ${fmtMs(utt[derived] ?? b - a)} ms`,
    });
    bar.addEventListener("mousemove", (e) => showTooltip(e, utt, label, utt[derived] ?? b - a));
    bars.push([w, bar]);
  }
  // Widest first, so a short step drawn over a long neighbour stays visible.
  bars.sort((p, q) => q[0] - p[0]).forEach(([, bar]) => g.append(bar));
  if (s.request_sent !== undefined && s.synthesis_complete !== undefined) {
    g.append(el("svg:rect", {
      x: x(s.request_sent), y: mid + L.bar / 2 + 1,
      width: Math.max(2, x(s.synthesis_complete) - x(s.request_sent)), height: 3,
      class: "bar seg-synth", "data-step": "synth",
    }));
  }
  if (s.interrupted !== undefined) {
    const cx = x(s.interrupted);
    g.append(el("svg:path", { d: `M${cx - 5} ${mid - 6}l10 10m0 -10l-10 10`,
      class: "marker seg-interrupted", "data-step": "interrupted" }));
  }
  g.addEventListener("mousemove", (e) => {
    if (!e.target.classList.contains("bar")) showTooltip(e, utt, null, null);
  });
  g.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  return g;
}

function showTooltip(event, utt, label, value) {
  const tip = $("tooltip");
  const lines = [el("strong", {}, `#${utt.index} ${truncate(utt.text.trim(), 60)}`)];
  if (label) lines.push(el("div", { class: "tip-focus" }, `${label}: ${fmtMs(value)} ms`));
  lines.push(el("div", {}, `outcome: ${utt.outcome}${utt.error ? ` (${utt.error})` : ""}`));
  for (const [key, name] of DERIVED) {
    lines.push(el("div", {}, `${name}: ${fmtMs(utt[key])} ms`));
  }
  tip.replaceChildren(...lines);
  tip.hidden = false;
  const pad = 14;
  const left = Math.min(event.pageX + pad, window.scrollX + window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = `${left}px`;
  tip.style.top = `${event.pageY + pad}px`;
}

function renderDerived(trace) {
  const body = $("derived").tBodies[0];
  body.replaceChildren(...trace.utterance_traces.map((u) => {
    const tr = el("tr", { class: `outcome-${u.outcome}` });
    tr.append(
      el("td", {}, String(u.index)),
      el("td", { class: "text", title: u.text }, truncate(u.text.trim(), 40)),
      el("td", { class: "outcome" }, u.outcome),
      ...["time_to_first_audio_ms", "pool_wait_ms", "tts_first_byte_ms", "bridge_overhead_ms",
        "synthesis_ms", "send_ms", "playout_lag_ms", "total_ms"]
        .map((k) => el("td", { class: "num" }, fmtMs(u[k]))),
      el("td", { class: "num" }, u.audio_seconds.toFixed(2)),
      el("td", { class: "num" }, String(u.underruns)),
    );
    return tr;
  }));
}

function renderDetail(trace) {
  $("detail").hidden = false;
  $("detail-title").textContent = `Call ${trace.call_id}`;
  const meta = [
    trace.provider,
    trace.live ? "live" : `ended: ${trace.end_reason ?? "—"}`,
    `started ${fmtStarted(trace.started_at)}`,
    `duration ${fmtDuration(trace.duration_ms)}`,
    `${trace.barge_ins} barge-in${trace.barge_ins === 1 ? "" : "s"}`,
    `${trace.underruns} underrun${trace.underruns === 1 ? "" : "s"}`,
  ];
  if (trace.dtmf.length) meta.push(`DTMF ${trace.dtmf.join(" ")}`);
  $("detail-meta").textContent = meta.join(" · ");
  renderWaterfall(trace);
  renderDerived(trace);
}

async function refreshDetail() {
  if (!state.selected) return;
  let trace;
  try {
    trace = await getJSON(`/calls/${encodeURIComponent(state.selected)}/trace`);
  } catch (err) {
    if (err.status !== 404) throw err;
    // Gone from the bridge's history (or a stale link): stop asking for it.
    state.selected = null;
    $("detail").hidden = true;
    history.replaceState(null, "", location.pathname);
    return;
  }
  state.live = trace.live;
  state.trace = trace;
  renderDetail(trace);
}

// ---- refresh loop ----------------------------------------------------------------------------

function showError(err) {
  $("status").textContent = `refresh failed: ${err.message}`;
  $("status").classList.add("error");
}

async function tick() {
  try {
    renderCalls(await getJSON("/calls"));
    // A live call's waterfall grows; an ended one is final once drawn.
    if (state.selected && (state.live || $("detail").hidden)) await refreshDetail();
  } catch (err) {
    showError(err);
  } finally {
    setTimeout(tick, REFRESH_MS);
  }
}

// Drawn again when its box changes width (a rotated phone, a scroll bar coming or going), so
// the drawing always fits it.
const resized = new ResizeObserver(() => {
  if (state.trace && $("waterfall").clientWidth !== drawnWidth) renderWaterfall(state.trace);
});

document.addEventListener("DOMContentLoaded", () => {
  renderLegend();
  resized.observe($("waterfall"));
  tick();
});
