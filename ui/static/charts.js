// The charts: sagas finished per second by outcome, and p50/p99 of how long they took, over
// the last minutes, for the model on show (GET /stats). Inline SVG, drawn here.

import { $, MODELS, api, duration, esc, state } from "./core.js";

const MINUTES = 5;
const BUCKET_SECONDS = 10;
const RATE = [["completed", "completed"], ["compensated", "compensated"],
              ["compensation_failed", "compensation failed"]];
const DURATION = [["p50_ms", "p50"], ["p99_ms", "p99"]];
const [W, H] = [520, 200];
const PAD = { left: 58, right: 12, top: 12, bottom: 30 };

export async function refreshCharts() {
  const model = state.model;
  let answer;
  try {
    answer = await api(`/stats?minutes=${MINUTES}&bucket=${BUCKET_SECONDS}&model=${model}`);
  } catch (_) { return; }
  if (!answer.ok || model !== state.model) return;
  const { buckets, bucket_seconds: seconds, minutes } = answer.body;
  $("#charts-title").textContent = `The last ${minutes} minutes, ${MODELS[model].adjective} sagas`;
  const counts = RATE.map(([key, label]) =>
    `${Math.round(buckets.reduce((sum, b) => sum + b[key] * seconds, 0))} ${label}`);
  $("#chart-rate").innerHTML = chart({
    id: "rate", buckets, minutes, series: RATE, format: rate, plotted: (v) => v > 0,
    title: `Sagas finished per second by outcome, ${MODELS[model].adjective}, in ${seconds}-second buckets`,
    desc: `In the last ${minutes} minutes: ${counts.join(", ")}.`,
  });
  const latest = [...buckets].reverse().find((b) => b.p50_ms !== null);
  $("#chart-duration").innerHTML = chart({
    id: "duration", buckets, minutes, series: DURATION, format: duration, tickFormat: msTick,
    plotted: (v) => v !== null,
    title: `p50 and p99 saga duration, ${MODELS[model].adjective}, per ${seconds}-second bucket`,
    desc: latest ? `Latest bucket with sagas: p50 ${duration(latest.p50_ms)}, p99 ${duration(latest.p99_ms)}.`
      : `No saga finished in the last ${minutes} minutes.`,
  });
}

const rate = (value) => `${Number(value.toFixed(2))}/s`;
const msTick = (ms) => (ms >= 1000 ? `${Number((ms / 1000).toPrecision(3))} s` : `${Number(ms.toPrecision(3))} ms`);

// A round step for about four ticks up to `max`.
function niceStep(max) {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

function chart({ id, buckets, minutes, series, format, tickFormat = format, plotted, title, desc }) {
  const values = buckets.flatMap((b) => series.map(([key]) => b[key])).filter(plotted);
  const max = values.length ? Math.max(...values) : 1;
  const step = niceStep(max || 1);
  const top = Math.ceil(max / step) * step || step;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + ((i + 0.5) * plotW) / buckets.length;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const ids = { title: `chart-${id}-title`, desc: `chart-${id}-desc` };
  let svg = `<svg viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg" role="img"
    aria-labelledby="${ids.title} ${ids.desc}" data-empty="${!values.length}" data-points="${values.length}">
    <title id="${ids.title}">${esc(title)}</title><desc id="${ids.desc}">${esc(desc)}</desc>`;
  for (let k = 0; k * step <= top + step / 2; k += 1) {
    const tick = k * step;
    svg += `<line class="grid" x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(tick)}" y2="${y(tick)}"/>
      <text class="tick" x="${PAD.left - 6}" y="${y(tick) + 4}" text-anchor="end">${esc(tickFormat(tick))}</text>`;
  }
  for (let minute = 0; minute <= minutes; minute += 1) {
    const tx = PAD.left + plotW * (1 - minute / minutes);
    svg += `<line class="axis" x1="${tx}" x2="${tx}" y1="${PAD.top + plotH}" y2="${PAD.top + plotH + 4}"/>
      <text class="tick" x="${tx}" y="${H - 10}" text-anchor="${minute === 0 ? "end" : minute === minutes ? "start" : "middle"}">${
        minute === 0 ? "now" : `−${minute} min`}</text>`;
  }
  svg += `<line class="axis" x1="${PAD.left}" x2="${W - PAD.right}" y1="${PAD.top + plotH}" y2="${PAD.top + plotH}"/>
    <line class="axis" x1="${PAD.left}" x2="${PAD.left}" y1="${PAD.top}" y2="${PAD.top + plotH}"/>`;
  if (!values.length) {
    return `${svg}<text class="empty-note" x="${PAD.left + plotW / 2}" y="${PAD.top + plotH / 2}" text-anchor="middle">No saga finished in the last ${minutes} minutes</text></svg>`;
  }
  for (const [key, label] of series) {
    if (!buckets.some((b) => plotted(b[key]))) continue; // nothing to draw: no line along the axis either
    // A line through every bucket that has a value (a gap where it has none), a point where it counts.
    let path = "";
    let open = false;
    buckets.forEach((b, i) => {
      if (b[key] === null) { open = false; return; }
      path += `${open ? "L" : "M"}${x(i).toFixed(1)},${y(b[key]).toFixed(1)} `;
      open = true;
    });
    svg += `<path class="series s-${key}" d="${path}" fill="none"/>`;
    buckets.forEach((b, i) => {
      if (!plotted(b[key])) return;
      const at = new Date(b.start).toLocaleTimeString([], { hour12: false });
      svg += `<circle class="point s-${key}" data-series="${key}" data-value="${b[key]}" cx="${x(i).toFixed(1)}"
        cy="${y(b[key]).toFixed(1)}" r="3.5"><title>${esc(`${label} from ${at}: ${format(b[key])}`)}</title></circle>`;
    });
  }
  return `${svg}</svg>`;
}
