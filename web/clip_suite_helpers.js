// Pure helpers for the CLIP Suite web extension (clip_suite.js): token-count formatting, a debounce,
// clip_skip lookups in the table the server sends, score formatting and widget placement.
// This module imports nothing from ComfyUI, so `node --test tests/js/` runs it outside the browser.
// ComfyUI loads every .js file under web/ as an extension module: this one only defines things.

/** Prompt tokens per 77-token chunk (BOS and EOS take the other two). */
export const CHUNK_BODY = 75;

/** Every node id of the pack (nodes/__init__.py's NODE_CLASS_MAPPINGS; a test keeps the two equal). */
export const NODE_IDS = [
  "ClipSuiteLoader",
  "ClipSuiteLoraLoader",
  "ClipSuiteTextEncode",
  "ClipSuiteTextEncodeSDXL",
  "ClipSuitePromptTokens",
  "ClipSuiteImageTextSimilarity",
  "ClipSuiteSelectBest",
  "ClipSuiteAestheticScore",
  "ClipSuiteZeroShot",
  "ClipSuiteA1111Parameters",
];

/** The prompt widgets of each of our nodes that get a live token counter. */
export const PROMPT_WIDGETS = {
  ClipSuiteTextEncode: ["text"],
  ClipSuiteTextEncodeSDXL: ["text_g", "text_l"],
  ClipSuitePromptTokens: ["text"],
};

/** Our nodes that report per-image scores after a run ({"ui": {"text": [...], "scores": [...]}}). */
export const SCORE_NODES = ["ClipSuiteImageTextSimilarity", "ClipSuiteSelectBest", "ClipSuiteAestheticScore"];

/** Our nodes whose report (ui "text") is shown on the node after a run, a few lines of it. */
export const REPORT_NODES = ["ClipSuiteZeroShot"];

/** Our encode nodes: they report the model family and layers after a run (ui "clip_suite"). */
export const ENCODE_NODES = ["ClipSuiteTextEncode", "ClipSuiteTextEncodeSDXL"];

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** "143 tokens, 2 chunks" for a route answer {tokens, chunks, chunk_tokens, boundaries}. */
export function formatCount(report) {
  return `${plural(report.tokens, "token")}, ${plural(report.chunks, "chunk")}`;
}

/** One line per chunk: "chunk 2: 68/75 … last words" (the words where the chunk ends). */
export function formatChunkLines(report) {
  return report.chunk_tokens.map((n, i) => {
    const tail = report.boundaries[i] ? ` … ${report.boundaries[i]}` : " (empty)";
    return `chunk ${i + 1}: ${n}/${CHUNK_BODY}${tail}`;
  });
}

/** The request body the route takes, from the node's widget values (defaults as the route's). */
export function tokenRequest(text, values = {}) {
  const body = { text: String(text ?? "") };
  if (values.chunking !== undefined) body.chunking = values.chunking;
  if (values.comma_backtrack !== undefined) body.comma_backtrack = Number(values.comma_backtrack);
  if (values.weighting !== undefined && values.weighting !== "auto") body.weighting = values.weighting;
  // Prompt Tokens' weighting "auto" (or a node without one) reads the syntax that goes with its chunking,
  // as nodes/prompt_tokens.py does; the route's own default (comfy) matches the CLI's.
  else if (values.chunking !== undefined) body.weighting = values.chunking === "a1111" ? "a1111" : "comfy";
  // The encoders' A1111 schedule inputs: the route then answers with `schedule` too.
  if (values.steps !== undefined) body.steps = Number(values.steps);
  if (values.scheduler !== undefined) body.scheduler = values.scheduler;
  return body;
}

/**
 * What the route's `schedule` says about a prompt with A1111 prompt editing/alternation:
 * "3 prompts over 20 steps" (steps > 0), a hint to set steps (steps = 0), or "" (no schedule syntax).
 */
export function formatSchedule(report) {
  const s = report?.schedule;
  if (!s || !s.has_syntax) return "";
  if (!s.steps) return "schedule syntax: set steps to resolve";
  return `${plural(s.prompts, "prompt")} over ${plural(s.steps, "step")}`;
}

/**
 * `fn` called once, `waitMs` after the last of a burst of calls, with that call's arguments.
 * The returned function has `cancel()` (drop a pending call) and `flush()` (run it now).
 * Uses the global setTimeout/clearTimeout at call time (so fake timers in tests apply).
 */
export function debounce(fn, waitMs) {
  let timer = null;
  let pending = null;
  const run = () => {
    timer = null;
    const args = pending;
    pending = null;
    if (args) fn(...args);
  };
  const debounced = (...args) => {
    pending = args;
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(run, waitMs);
  };
  debounced.cancel = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    pending = null;
  };
  debounced.flush = () => {
    if (timer !== null) clearTimeout(timer);
    run();
  };
  return debounced;
}

// ---------------------------------------------------------------------------------------- clip_skip
// The rules live in clip_impl/clip_skip.py only: after a run, an encode node's ui entry carries `table`
// (clip_skip.layer_table for the model it ran on): per applies_to, the allowed range and, for each allowed
// clip_skip, each tower's layer with its description and the warnings. These helpers only look things up.

/**
 * What `clipSkip` selects on the model of an encode node's ui entry ({"table": ...}):
 * {layers: {tower: {layer, layerNorm, numLayers, describe}}, warnings, range}, or, out of range,
 * {error, range} (the node refuses such a value when it runs).
 */
export function resolveClipSkip(info, clipSkip, appliesTo = "both") {
  const table = info?.table;
  if (!table?.applies_to) throw new Error("no clip_skip table: run the node once (or update CLIP Suite)");
  const rule = table.applies_to[appliesTo];
  if (!rule) {
    const choices = Object.keys(table.applies_to).join(", ");
    throw new Error(`clip_skip_applies_to=${JSON.stringify(appliesTo)}; use one of ${choices}`);
  }
  const range = rule.range;
  const entry = Number.isInteger(Number(clipSkip)) ? rule.choices[String(Number(clipSkip))] : undefined;
  if (!entry) return { error: `clip_skip ${clipSkip} is out of range for ${table.label}: use ${range[0]}..${range[1]}`, range };
  const order = table.order ?? Object.keys(entry.layers); // channel order: CLIP-L before CLIP-G
  const layers = Object.fromEntries(
    order.map((t) => {
      const c = entry.layers[t];
      return [t, { layer: c.layer, layerNorm: c.layer_norm, numLayers: c.num_layers, describe: c.describe }];
    }),
  );
  return { layers, warnings: entry.warnings, range };
}

/**
 * The clip_skip lines for the node: what `clipSkip` selects on the model of the last run:
 * {lines: ["clip_skip 1 on SDXL:", "  CLIP-L layer 10/12 (no LayerNorm)", ..., one warning line], warn}.
 */
export function clipSkipLines(info, clipSkip, appliesTo = "both") {
  const res = resolveClipSkip(info, clipSkip, appliesTo);
  if (res.error) return { lines: [res.error], warn: true };
  const lines = [`clip_skip ${clipSkip} on ${info.table.label}:`];
  lines.push(...Object.values(res.layers).map((c) => `  ${c.describe}`));
  const raw = Object.entries(res.layers).filter(([, c]) => c.layer === c.numLayers && !c.layerNorm);
  if (raw.length) {
    const towers = raw.map(([t]) => info.table.towers[t] ?? t).join(", ");
    lines.push(`warning: raw final layer on ${towers}: some SDXL checkpoints give white or blank images`);
  }
  return { lines, warn: raw.length > 0 };
}

/** A short suffix for the clip_skip widget's label: "L 11/12, G 31/32", or "use -1..10" out of range. */
export function clipSkipBadge(info, clipSkip, appliesTo = "both") {
  const res = resolveClipSkip(info, clipSkip, appliesTo);
  if (res.error) return `use ${res.range[0]}..${res.range[1]}`;
  const short = { l: "L", g: "G", h: "H" };
  return Object.entries(res.layers)
    .map(([t, c]) => `${short[t] ?? t} ${c.layer}/${c.numLayers}${res.warnings.length ? " raw" : ""}`)
    .join(", ");
}

// ------------------------------------------------------------------------------------------- scores

/** A score as the node's report prints it (4 decimals); "n/a" for anything that is not a finite number. */
export function formatScore(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(4) : "n/a";
}

/**
 * Lines for per-image scores in batch order, numbered from 0 like the node's best_index output:
 * a summary ("4 images: best #2 31.4159, mean 28.0000") then "#i  score  bar" (the best marked).
 * Long batches show the first `limit` images and a count of the rest.
 */
export function formatScores(scores, limit = 16) {
  const values = (scores ?? []).map(Number);
  if (values.length === 0) return ["no scores"];
  const finite = values.filter(Number.isFinite);
  let best = -1;
  values.forEach((v, i) => {
    if (Number.isFinite(v) && (best < 0 || v > values[best])) best = i;
  });
  const mean = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : NaN;
  const top = finite.length ? Math.max(...finite.map(Math.abs)) : 0;
  const summary = `best #${best} ${formatScore(values[best])}, mean ${formatScore(mean)}`;
  const lines = [`${plural(values.length, "image")}: ${summary}`];
  values.slice(0, limit).forEach((v, i) => {
    const bar = top > 0 && Number.isFinite(v) ? "█".repeat(Math.round((Math.abs(v) / top) * 12)) : "";
    lines.push(`#${i}  ${formatScore(v)}  ${bar}${i === best ? "  ← best" : ""}`);
  });
  if (values.length > limit) lines.push(`… ${values.length - limit} more`);
  return lines;
}

/**
 * The first `limit` lines of a node's report (e.g. the zero-shot table: a header, the logit factor, then
 * "#i: label p, label p, label p" per image), and a count of the rest.
 */
export function formatReport(text, limit = 18) {
  const lines = String(text ?? "").split("\n").filter((t) => t.length > 0);
  if (lines.length === 0) return ["no report"];
  if (lines.length <= limit) return lines;
  return [...lines.slice(0, limit), `… ${lines.length - limit} more lines (see the report output)`];
}

// ------------------------------------------------------------------------------------------ widgets

/**
 * Move `widget` to the end of `widgets` (in place; returns its index).
 * Why: this frontend saves widgets_values by widget index, skipping widgets with serialize === false
 * (leaving a hole), but loads them into the list of serializable widgets only. A display widget before a
 * real one would shift every later value by one on load; at the end it leaves no hole.
 */
export function placeLast(widgets, widget) {
  const i = widgets.indexOf(widget);
  if (i >= 0 && i !== widgets.length - 1) {
    widgets.splice(i, 1);
    widgets.push(widget);
  }
  return widgets.indexOf(widget);
}

/**
 * Height in pixels of the info panel's widget for `lines` text lines: the lines (fixed line height, see
 * clip_suite.js CSS), the element's padding, and the margin the frontend leaves around a DOM widget.
 */
export function panelHeight(lines, lineHeight = 15, padding = 8, margin = 0) {
  return Math.max(1, lines) * lineHeight + 2 * padding + 2 * margin;
}
