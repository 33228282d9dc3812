// The studio page: plain JS, no library, nothing fetched but from this server.
"use strict";

const TASK_LABELS = {
  generate: "Start from nothing",
  continue: "Continue a piece",
  infill: "Write bars again (infill)",
  accompany: "Harmonise / accompany",
  arrange: "Arrange",
};
const POLL_MS = 400;

const $ = (selector, root = document) => root.querySelector(selector);
let model = null;          // the chosen model's description from /api/models/NAME
let captionEdited = false; // once the user types in the caption, the fields stop overwriting it

function showError(message) {
  const line = $("#error");
  line.textContent = message || "";
  line.hidden = !message;
}

// Every call returns JSON or throws an Error whose message is the server's one line.
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error("the studio server is not answering (was it stopped?)");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `the server answered ${response.status}`);
  }
  return body;
}

function option(select, value, text) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text === undefined ? value : text;
  select.append(item);
}

// ------------------------------------------------------------------ the model and its fields

async function loadModels() {
  const { models } = await api("/api/models");
  const select = $("#model");
  models.forEach((name) => option(select, name));
  select.addEventListener("change", () => chooseModel(select.value).catch((e) => showError(e.message)));
  await chooseModel(models[0]);
}

async function chooseModel(name) {
  $("#generate").disabled = true;
  $("#model-state").textContent = "loading the model…";
  showError("");
  try {
    model = await api(`/api/models/${encodeURIComponent(name)}`);
  } catch (error) {
    $("#model-state").textContent = "";
    throw error;
  }
  $("#model-state").textContent = model.constraints ? "" : "(no corpus profile: no corpus constraints)";
  fillTasks(model.tasks);
  fillCaptionFields(model);
  fillSampling(model.sampling);
  $("#constrain").checked = model.constraints;
  $("#constrain").disabled = !model.constraints;
  $("#strict_voice_leading").checked = model.strict_voice_leading;
  delete $("#strict_voice_leading").dataset.touched;
  $("#strict_voice_leading").disabled = !model.constraints;
  $("#key_bias").disabled = !model.constraints;
  $("#density_bias").disabled = !model.constraints;
  $("#generate").disabled = false;
}

function fillTasks(tasks) {
  const box = $("#tasks");
  box.replaceChildren();
  tasks.forEach((task, index) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    Object.assign(radio, { type: "radio", name: "task", value: task, id: `task-${task}`, checked: index === 0 });
    radio.addEventListener("change", showTaskInputs);
    label.append(radio, TASK_LABELS[task] || task);
    box.append(label);
  });
  showTaskInputs();
}

function currentTask() {
  const checked = $("input[name=task]:checked");
  return checked ? checked.value : "generate";
}

function showTaskInputs() {
  const task = currentTask();
  $("#upload-row").hidden = task === "generate";
  $("#bars-row").hidden = task !== "infill";
  $("#length-row").hidden = task !== "generate";
  $("#tracks-row").hidden = task !== "accompany";
}

function fillCaptionFields(info) {
  $("#caption-fields").hidden = !info.captions;
  const fields = info.fields;
  $("#composer").value = fields.composer || "";
  const key = $("#key");
  key.replaceChildren();
  option(key, "", "any");
  info.keys.forEach((name) => option(key, name));
  key.value = fields.key || "";
  const metre = $("#time_signature");
  metre.replaceChildren();
  option(metre, "", "any");
  info.time_signatures.forEach((name) => option(metre, name));
  metre.value = fields.time_signature || "";
  $("#tempo").value = fields.tempo || "";
  const density = $("#density");
  density.replaceChildren();
  option(density, "", "any");
  info.densities.forEach((name) => option(density, name));  // none: the model never learned it
  density.value = fields.density || "";
  density.disabled = !info.densities.length;
  const box = $("#instruments");
  box.replaceChildren();
  // Parts picked by role (Drums, Bass, Piano, Strings, Lead...), each role's instruments under it.
  const roles = new Map();
  info.instruments.forEach((instrument) => {
    if (!roles.has(instrument.role)) roles.set(instrument.role, []);
    roles.get(instrument.role).push(instrument);
  });
  roles.forEach((instruments, role) => {
    const group = document.createElement("div");
    group.className = "role";
    group.dataset.role = role;
    const heading = document.createElement("span");
    heading.className = "role-name";
    heading.textContent = role;
    group.append(heading);
    instruments.forEach(({ program, name }) => {
      const label = document.createElement("label");
      label.className = "instrument";
      const parts = document.createElement("input");
      Object.assign(parts, { type: "number", min: 0, max: 16, step: 1, value: fields.instruments[program] || 0 });
      parts.dataset.program = program;
      parts.title = `${role}: ${name}, how many parts (0 = none)`;
      label.append(parts, name);
      group.append(label);
    });
    box.append(group);
  });
  captionEdited = false;
  $("#caption").value = info.caption;
}

// The sampling fields are the model's own settings (`SamplingSettings`, sent with the model),
// each shown where the page has an input of its name.
function samplingFields() {
  return Object.keys(model ? model.sampling : {}).filter((name) => $(`#${name}`));
}

function fillSampling(sampling) {
  samplingFields().forEach((name) => { $(`#${name}`).value = sampling[name]; });
}

async function rebuildCaption() {
  if (captionEdited) return;
  const form = new FormData();
  ["composer", "key", "time_signature", "tempo", "density"].forEach((id) => form.append(id, $(`#${id}`).value));
  const instruments = [...document.querySelectorAll("#instruments input")]
    .filter((input) => Number(input.value) > 0)
    .map((input) => `${input.dataset.program}:${input.value}`);
  form.append("instruments", instruments.join(","));
  try {
    const { caption } = await api("/api/caption", { method: "POST", body: form });
    $("#caption").value = caption;
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

// ------------------------------------------------------------------ requests and results

function requestForm() {
  const form = new FormData();
  const task = currentTask();
  form.append("model", $("#model").value);
  form.append("task", task);
  if (model.captions) form.append("caption", $("#caption").value);
  ["num_samples", "seed", ...samplingFields()].forEach((name) => {
    const value = $(`#${name}`).value.trim();
    if (value !== "") form.append(name, value);
  });
  form.append("constrain", $("#constrain").checked ? "true" : "false");
  // Left as it starts, strict voice leading is the corpus's habit for as many parts as are asked
  // (the chorales: four voices strict, eight parts doubling them colla parte not); once touched, as set.
  if (!$("#constrain").checked) form.append("strict_voice_leading", "false");
  else if ($("#strict_voice_leading").dataset.touched) {
    form.append("strict_voice_leading", $("#strict_voice_leading").checked ? "true" : "false");
  }
  if (task !== "generate") {
    const file = $("#upload").files[0];
    if (file) form.append("file", file, file.name);
  }
  if (task === "infill") form.append("bars", $("#bars").value);
  if (task === "generate") {
    form.append("bars", $("#length").value);
    form.append("registers", $("#registers").value);
    form.append("key_bias", $("#key_bias").checked && $("#constrain").checked ? "true" : "false");
    form.append("density_bias", $("#density_bias").checked && $("#constrain").checked ? "true" : "false");
  }
  if (task === "accompany") form.append("tracks", $("#tracks").value);
  return form;
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const task = currentTask();
  if (task !== "generate" && !$("#upload").files.length) {
    showError(`${TASK_LABELS[task]} needs a MIDI file or a recording: choose one above`);
    return;
  }
  let status;
  try {
    status = await api("/api/jobs", { method: "POST", body: requestForm() });
  } catch (error) {
    showError(error.message);
    return;
  }
  const card = $("#job-template").content.firstElementChild.cloneNode(true);
  $(".title", card).textContent = `${TASK_LABELS[task]} — ${$("#model").value}`;
  $("#jobs").prepend(card);
  follow(status, card);
}

async function follow(status, card) {
  while (true) {
    showStatus(status, card);
    if (status.state === "done" || status.state === "error") break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      status = await api(`/api/jobs/${status.id}`);
    } catch (error) {
      status = { state: "error", message: error.message };
    }
  }
  if (status.state === "done") {
    const results = $(".results", card);
    status.results.forEach((result) => results.append(resultView(result)));
    await refreshHistory();
  }
}

function showStatus(status, card) {
  const state = $(".state", card);
  const bar = $("progress", card);
  if (status.state === "queued") {
    state.textContent = `Waiting: ${status.position} request${status.position === 1 ? "" : "s"} ahead`;
    bar.removeAttribute("value");
  } else if (status.state === "running") {
    if (status.message) {
      state.textContent = status.message[0].toUpperCase() + status.message.slice(1) + "…";
      bar.removeAttribute("value");
    } else {
      state.textContent = `Sampling: ${status.step} of at most ${status.total} tokens`;
      bar.max = status.total || 1;
      bar.value = status.step;
    }
  } else if (status.state === "done") {
    card.classList.add("finished");
    state.textContent = `Done in ${status.seconds} s`;
  } else {
    card.classList.add("failed");
    state.textContent = `Error: ${status.message}`;
  }
}

function resultView(result) {
  const view = $("#result-template").content.firstElementChild.cloneNode(true);
  view.dataset.result = result.id;
  $(".title", view).textContent = result.title;
  $(".summary", view).textContent = result.summary;
  const asked = $(".asked", view);
  (result.controls || []).forEach((row) => {
    const line = document.createElement("tr");
    [row.control, row.asked || "(free)", row.written].forEach((text) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      line.append(cell);
    });
    asked.append(line);
  });
  $(".piano-roll", view).src = result.files.png;
  $(".player", view).src = result.files.wav;
  $(".sheet img", view).src = result.files.svg;
  ["mid", "musicxml", "wav"].forEach((kind) => {
    const link = $(`.download-${kind}`, view);
    link.href = `${result.files[kind]}?download=true`;
    link.setAttribute("download", "");
  });
  return view;
}

async function refreshHistory() {
  let results;
  try {
    ({ results } = await api("/api/history"));
  } catch (error) {
    showError(error.message);
    return;
  }
  const list = $("#history");
  list.replaceChildren();
  $("#history-empty").hidden = results.length > 0;
  results.forEach((result) => {
    const item = document.createElement("li");
    const show = document.createElement("button");
    show.type = "button";
    show.className = "link";
    show.textContent = result.title;
    show.addEventListener("click", () => {
      const card = $("#job-template").content.firstElementChild.cloneNode(true);
      card.classList.add("finished");
      $(".title", card).textContent = "From this session";
      $(".results", card).append(resultView(result));
      $("#jobs").prepend(card);
    });
    item.append(show, ` — ${result.summary} — `);
    const midi = document.createElement("a");
    midi.href = `${result.files.mid}?download=true`;
    midi.textContent = "MIDI";
    midi.setAttribute("download", "");
    item.append(midi);
    list.append(item);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#request").addEventListener("submit", submit);
  document.querySelectorAll("[data-field]").forEach((input) => input.addEventListener("change", rebuildCaption));
  $("#instruments").addEventListener("change", rebuildCaption);
  $("#strict_voice_leading").addEventListener("change", (event) => { event.target.dataset.touched = "1"; });
  $("#caption").addEventListener("input", () => { captionEdited = true; });
  loadModels().catch((error) => showError(error.message));
  refreshHistory();
});
