// The SILMA TTS settings page: saves through the JSON API (session cookie + X-CSRF-Token),
// shows each error next to the field it names, refreshes the pool statistics every 2 s.
// No libraries: the page must work offline.
"use strict";

const REFRESH_MS = 2000;
const userId = document.body.dataset.userId;
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const api = (path) => `/api/users/${encodeURIComponent(userId)}/${path}`;
const $ = (id) => document.getElementById(id);

// A fetch that returns {ok, status, body}; a lost session sends the user to log in again.
async function call(method, path, body) {
  const init = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(api(path), init);
  if (response.status === 401) {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
    throw new Error("logged out");
  }
  const type = response.headers.get("Content-Type") || "";
  const parsed = type.startsWith("application/json") ? await response.json() : response;
  return { ok: response.ok, status: response.status, body: parsed };
}

// Clear the given fields' errors, then show the ones the server named. A field without its own
// slot is reported in `fallback`.
function showErrors(fields, errors, fallback) {
  for (const field of fields) {
    const slot = $(`error-${field}`);
    if (slot) slot.textContent = "";
  }
  for (const [field, message] of Object.entries(errors || {})) {
    const slot = $(`error-${field}`) || $(`error-${fallback}`);
    slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
  }
}

function status(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.className = `status ${kind || ""}`;
}

function failureOf(result) {
  return result.body.errors || { body: result.body.error || `HTTP ${result.status}` };
}

// -- Server configuration ------------------------------------------------------------------
// Which fields apply to which mode is the page's data-modes attributes (CSS hides the others);
// saving sends only the fields the chosen mode shows.
let mode = document.body.dataset.mode;
const serverForm = $("server-form");
const serverControls = () => [...serverForm.elements].filter((el) => el.name);
const SERVER_FIELDS = ["mode", "body", ...serverControls().map((el) => el.name)];

function appliesTo(element, chosen) {
  const scope = element.closest("[data-modes]");
  return !scope || scope.dataset.modes.split(" ").includes(chosen);
}

function selectMode(chosen) {
  mode = chosen;
  document.body.dataset.mode = chosen;
  for (const button of document.querySelectorAll("button.mode")) {
    const on = button.dataset.mode === chosen;
    button.classList.toggle("selected", on);
    button.setAttribute("aria-pressed", String(on));
  }
  const endpoint = $("api_endpoint");
  endpoint.placeholder = endpoint.dataset[chosen === "v2" ? "placeholderV2" : "placeholderApi"];
}

// Speed as the API takes it: empty is null (the bridge's); anything else that is not a number
// goes as typed, so the server's message says what is wrong.
function speedValue(text) {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  const number = Number(trimmed);
  return Number.isFinite(number) ? number : trimmed;
}

function serverChanges() {
  const body = { mode };
  for (const control of serverControls()) {
    if (!appliesTo(control, mode)) continue;
    if (control.name === "api_key") {
      if (control.value) body.api_key = control.value; // empty keeps the stored key
    } else {
      body[control.name] = control.name === "speed" ? speedValue(control.value) : control.value;
    }
  }
  return body;
}

// What calls use, as the server resolved it; until the local server runs it has no address
// here, and the pool's (showPool) fills it in.
function showEffective(effective) {
  $("effective").dataset.kind = effective.kind;
  $("effective-summary").textContent = effective.summary;
  $("effective-endpoint").textContent = effective.endpoint;
  $("effective-note").textContent = effective.note;
}

function showSettings(view) {
  showEffective(view.effective);
  $("api_key").placeholder = view.api_key || "not set";
  $("api_key").value = "";
}

// The fields as stored (normalized by the server); the key stays write-only.
function showServerFields(view) {
  for (const control of serverControls()) {
    if (control.name !== "api_key") control.value = view[control.name] ?? "";
  }
}

async function saveServer(event) {
  event.preventDefault();
  status("server-status", "Saving…");
  const result = await call("PUT", "silma", serverChanges());
  if (result.ok) {
    showErrors(SERVER_FIELDS, {});
    showSettings(result.body);
    showServerFields(result.body);
    status("server-status", "Saved. The next call uses it.", "ok");
    refreshPool();
  } else {
    showErrors(SERVER_FIELDS, failureOf(result), "body");
    status("server-status", "Not saved.", "bad");
  }
}

// -- Region ----------------------------------------------------------------------------------
function showMeasurements() {
  $("region-measurements").hidden = $("region-select").value !== "auto";
}

// The region as stored: a refused choice goes back to it, so the page never shows a region
// that calls do not use.
let savedRegion = $("region-select").value;

async function saveRegion() {
  showMeasurements();
  status("region-status", "Saving…");
  const result = await call("PUT", "silma", { region: $("region-select").value });
  showErrors(["region"], result.ok ? {} : failureOf(result), "region");
  if (result.ok) {
    savedRegion = result.body.region;
    showSettings(result.body);
    refreshPool();
  } else {
    $("region-select").value = savedRegion;
    showMeasurements();
  }
  status("region-status", result.ok ? "Saved." : "Not saved.", result.ok ? "ok" : "bad");
}

// -- Pool statistics -------------------------------------------------------------------------
function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

// The last health check of the server calls use (the pool runs it; the page only reads it),
// in words: an unreachable server means callers hear silence.
function reachability(health) {
  const at = health.checked_at ? ` (checked ${new Date(health.checked_at * 1000)
    .toLocaleTimeString()})` : "";
  if (health.status === "ok") return [`Reachable: answered in ${health.latency_ms} ms${at}.`, "ok"];
  if (health.status === "unchecked") return ["Not checked yet: the first check is under way.", ""];
  if (health.status.startsWith("unreachable")) {
    return [`Unreachable${at}: no answer (${health.status.replace(/^unreachable: /, "")}). ` +
      "Calls hear silence until it answers: check the endpoint.", "bad"];
  }
  return [`Not healthy${at}: ${health.status}.`, "bad"];
}

function showReachability(text, kind) {
  const line = $("effective-health");
  line.textContent = text;
  line.className = kind;
}

function showPool(stats) {
  showReachability(...reachability(stats.server_health));
  if (!$("effective-endpoint").textContent) $("effective-endpoint").textContent = stats.endpoint;
  $("stat-total").textContent = `${stats.total} of ${stats.size}`;
  $("stat-ready").textContent = String(stats.ready);
  $("stat-in-use").textContent = String(stats.in_use);
  const ratio = $("stat-ratio");
  ratio.textContent = `${Math.round(stats.ready_ratio * 100)} %`;
  ratio.className = stats.ready_ratio_ok ? "ok" : "bad";
  $("stat-ratio-target").textContent = `target ${Math.round(stats.ready_ratio_target * 100)} %`;
  const health = stats.server_health.status;
  $("stat-health").textContent = health;
  $("stat-health").className = health === "ok" ? "ok" : health === "unchecked" ? "" : "bad";
  $("pool-endpoint").textContent = stats.endpoint;
  $("pool-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  const servers = $("servers").tBodies[0];
  servers.replaceChildren();
  for (const server of stats.servers) {
    const row = servers.insertRow();
    cell(row, server.endpoint);
    cell(row, `${server.ready} of ${server.total}`, "num");
    cell(row, String(server.in_use), "num");
    cell(row, String(server.requests_served), "num");
    const health = server.server_health.status;
    cell(row, server.ejected ? `ejected for ${server.ejected_for_s} s (${server.last_fault})` : health,
      server.ejected || !["ok", "unchecked"].includes(health) ? "bad" : "ok");
  }
  const rows = $("connections").tBodies[0];
  rows.replaceChildren();
  for (const conn of stats.connections) {
    const row = rows.insertRow();
    cell(row, String(conn.id));
    cell(row, conn.state);
    cell(row, `${conn.age_s.toFixed(1)} s`, "num");
    cell(row, String(conn.served), "num");
    cell(row, conn.healthy ? "healthy" : `unhealthy (${conn.last_health || "?"})`,
      conn.healthy ? "ok" : "bad");
  }
}

let poolTimer = null;

async function refreshPool() {
  clearTimeout(poolTimer);
  try {
    if (!document.hidden) {
      const result = await call("GET", "pool");
      if (result.ok) {
        showPool(result.body);
        showErrors(["pool"], {});
      } else {
        const errors = failureOf(result);
        showErrors(["pool"], errors, "pool");
        showReachability(`Unavailable: ${Object.values(errors).join(" ")}`, "bad");
      }
    }
  } catch (error) {
    showErrors(["pool"], { pool: `Statistics unavailable: ${error.message}` });
  } finally {
    poolTimer = setTimeout(refreshPool, REFRESH_MS);
  }
}

async function checkHealth() {
  status("health-result", "Checking…");
  const result = await call("POST", "health-check");
  showErrors(["api_endpoint", "api_key"], result.ok ? {} : failureOf(result), "api_endpoint");
  const health = result.body.health;
  if (result.ok) {
    status("health-result", `Healthy: answered in ${health.latency_ms} ms` +
      (health.server.engine ? ` (engine ${health.server.engine})` : ""), "ok");
  } else {
    status("health-result", health ? `Unhealthy: ${health.status}` : "Check failed.", "bad");
  }
  refreshPool();
}

// -- Voice -----------------------------------------------------------------------------------
const VOICE_FIELDS = ["clip", "transcript"];

async function uploadVoice(event) {
  event.preventDefault();
  const form = new FormData();
  const file = $("clip").files[0];
  if (file) form.append("clip", file, file.name);
  form.append("transcript", $("transcript").value);
  status("voice-status", "Uploading…");
  const result = await call("PUT", "voice", form);
  showErrors(VOICE_FIELDS, result.ok ? {} : failureOf(result), "clip");
  if (result.ok) {
    const kb = Math.floor(result.body.reference_audio_bytes / 1024);
    $("voice-summary").textContent =
      `Your clip (${kb} KB), transcript: “${result.body.reference_text}”`;
    status("voice-status", "Voice saved.", "ok");
  } else {
    status("voice-status", "Not saved.", "bad");
  }
}

let previewUrl = null;

async function preview(event) {
  event.preventDefault();
  const button = $("preview-button");
  button.disabled = true;
  const fields = ["text", "api_endpoint"];
  showErrors(fields, {});
  try {
    const result = await call("POST", "preview", { text: $("preview-text").value });
    if (!result.ok) {
      showErrors(fields, failureOf(result), "text");
      return;
    }
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(await result.body.blob());
    const audio = $("preview-audio");
    audio.src = previewUrl;
    audio.play().catch(() => {}); // autoplay may be blocked: the controls still play it
    refreshPool(); // the preview went through the pool
  } finally {
    button.disabled = false;
  }
}

// -- Pronunciation --------------------------------------------------------------------------
// The table is the list as it will be saved: rows in order, each written -> spoken. Saving
// sends the whole list; the server answers the list as stored (normalized) or an error per
// field, named "overrides.<row>.<field>" with rows from 0. Its button is "Update
// pronunciations", not a second "Save": two alike would be ambiguous to voice control.
const overridesForm = $("pronunciation-form");
const overrideRows = () => [...$("overrides").tBodies[0].rows];

// Numbers every row: its inputs' labels and its error slots' ids follow its place.
function renumberOverrides() {
  overrideRows().forEach((row, index) => {
    const n = index + 1;
    for (const input of row.querySelectorAll("[data-field]")) {
      const what = { written: "Written form", spoken: "Spoken form", match_case: "Match case" };
      input.setAttribute("aria-label", `${what[input.dataset.field]}, row ${n}`);
    }
    for (const slot of row.querySelectorAll("[data-error]")) {
      const field = slot.dataset.error;
      slot.id = field === "row" ? `error-overrides.${index}` : `error-overrides.${index}.${field}`;
    }
  });
  $("overrides-empty").hidden = overrideRows().length > 0;
  $("add-override").disabled = overrideRows().length >= Number($("overrides").dataset.max);
}

function addOverride(entry) {
  const row = $("override-row").content.firstElementChild.cloneNode(true);
  const field = (name) => row.querySelector(`[data-field="${name}"]`);
  field("written").value = entry.written;
  field("spoken").value = entry.spoken;
  field("match_case").checked = entry.match_case;
  $("overrides").tBodies[0].append(row);
  return row;
}

function showOverrides(list) {
  $("overrides").tBodies[0].replaceChildren();
  for (const entry of list) addOverride(entry);
  renumberOverrides();
}

function overridesValue() {
  return overrideRows().map((row) => {
    const field = (name) => row.querySelector(`[data-field="${name}"]`);
    return { written: field("written").value, spoken: field("spoken").value,
             match_case: field("match_case").checked };
  });
}

function clearOverrideErrors() {
  for (const slot of overridesForm.querySelectorAll(".field-error")) slot.textContent = "";
}

async function saveOverrides(event) {
  event.preventDefault();
  renumberOverrides();
  clearOverrideErrors();
  status("pronunciation-status", "Saving…");
  const result = await call("PUT", "pronunciation", { overrides: overridesValue() });
  if (result.ok) {
    showOverrides(result.body.overrides);
    status("pronunciation-status", "Saved. The next call says them.", "ok");
  } else {
    showErrors([], failureOf(result), "overrides");
    status("pronunciation-status", "Not saved.", "bad");
  }
}

$("add-override").addEventListener("click", () => {
  const row = addOverride({ written: "", spoken: "", match_case: false });
  renumberOverrides();
  row.querySelector("input").focus();
});
$("overrides").addEventListener("click", (event) => {
  const button = event.target.closest("button.remove-row");
  if (!button) return;
  button.closest("tr").remove();
  renumberOverrides();
  status("pronunciation-status", "Removed: save to keep it so.");
});
overridesForm.addEventListener("submit", saveOverrides);
renumberOverrides();

// -- Wiring ----------------------------------------------------------------------------------
for (const button of document.querySelectorAll("button.mode")) {
  button.addEventListener("click", () => selectMode(button.dataset.mode));
}
serverForm.addEventListener("submit", saveServer);
$("region-select").addEventListener("change", saveRegion);
$("health-button").addEventListener("click", checkHealth);
$("voice-form").addEventListener("submit", uploadVoice);
$("preview-form").addEventListener("submit", preview);
document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshPool(); });
selectMode(mode);
showMeasurements();
refreshPool();
