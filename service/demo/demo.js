// The demo page: pick an image, see /classify's top-5 as bars and /detect's boxes drawn on the image.
// ?image=URL runs it on an image fetched from that URL (used for the README screenshot).
"use strict";

const COLOURS = ["#d9480f", "#2b8a3e", "#1864ab", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d"];

function status(text) {
  document.getElementById("status").textContent = text;
}

async function post(route, blob, fields) {
  const form = new FormData();
  form.append("image", blob, "upload");
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  const response = await fetch(route, { method: "POST", body: form });
  const body = await response.json();
  return { ok: response.ok, status: response.status, body };
}

function drawBars(predictions) {
  const bars = document.getElementById("bars");
  bars.replaceChildren();
  for (const p of predictions) {
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("div");
    label.textContent = p.label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = (100 * p.score).toFixed(1) + "%";
    bar.append(fill);
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = (100 * p.score).toFixed(1) + "%";
    row.append(label, bar, score);
    bars.append(row);
  }
}

function drawImage(bitmap) {
  const canvas = document.getElementById("canvas");
  const scale = Math.min(640 / bitmap.width, 480 / bitmap.height, 4);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return scale;
}

function drawBoxes(answer, scale) {
  // boxes are in the pixels of the upload as displayed (EXIF orientation applied), as the bitmap is
  const context = document.getElementById("canvas").getContext("2d");
  context.lineWidth = 2;
  context.font = "13px system-ui, sans-serif";
  answer.detections.forEach((d, index) => {
    const [x1, y1, x2, y2] = d.box.map((v) => v * scale);
    const colour = COLOURS[d.category_id % COLOURS.length];
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.label} ${(100 * d.score).toFixed(0)}%`;
    const width = context.measureText(text).width + 6;
    context.fillStyle = colour;
    context.fillRect(x1, Math.max(0, y1 - 17), width, 17);
    context.fillStyle = "#fff";
    context.fillText(text, x1 + 3, Math.max(13, y1 - 4));
  });
}

async function run(blob) {
  status("");
  const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
  const scale = drawImage(bitmap);
  const [classified, detected] = await Promise.all([
    post("/classify", blob, { top_k: 5 }),
    post("/detect", blob, { score_threshold: 0.5 }),
  ]);
  if (classified.ok) drawBars(classified.body.predictions);
  else status(`/classify: ${classified.body.error}`);
  if (detected.ok) drawBoxes(detected.body, scale);
  else status(`/detect (${detected.status}): ${detected.body.error}`);
}

async function describe() {
  const info = await (await fetch("/info")).json();
  const detector = info.detector ? info.detector.model : "none (set RESNET_LAB_DETECTOR)";
  document.getElementById("models").textContent = `classifier: ${info.model} · detector: ${detector}`;
}

document.getElementById("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) run(file).catch((error) => status(String(error)));
});

describe().catch((error) => status(String(error)));
const example = new URLSearchParams(window.location.search).get("image");
if (example) {
  fetch(example)
    .then((response) => response.blob())
    .then(run)
    .catch((error) => status(String(error)));
}
