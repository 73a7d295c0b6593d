// CLIP Suite web extension: on our nodes, a live token/chunk counter per prompt widget (from the pack's own
// tokenizer, POST /clip_suite/tokens), the layer that clip_skip selects on the model of the last run, the
// last run's status, per-image scores on the similarity nodes and the report of the zero-shot node.
// Everything lives in one panel widget placed after the node's real widgets (see placeLast: a display
// widget anywhere else would corrupt saved workflows in this frontend). Hooks are wrapped, never replaced.
// On a page without our nodes nothing happens beyond patching our node types' prototypes.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  ENCODE_NODES,
  PROMPT_WIDGETS,
  REPORT_NODES,
  SCORE_NODES,
  clipSkipBadge,
  clipSkipLines,
  debounce,
  formatChunkLines,
  formatCount,
  formatReport,
  formatSchedule,
  formatScores,
  panelHeight,
  placeLast,
  tokenRequest,
} from "./clip_suite_helpers.js";

const ROUTE = "/clip_suite/tokens";
const PANEL = "clip_suite_info";
const TYPING_DELAY_MS = 300;
const LINE_HEIGHT = 15;
const PADDING = 6;
const MARGIN = 6; // the frontend shrinks a DOM widget's element by this on each side
const OPTION_WIDGETS = ["chunking", "comma_backtrack", "weighting", "steps", "scheduler"];
const OUR_NODES = new Set([...Object.keys(PROMPT_WIDGETS), ...SCORE_NODES, ...REPORT_NODES]);

const STYLE = `
.clip-suite-info { font: 11px/${LINE_HEIGHT}px monospace; color: var(--input-text, #ddd);
  background: var(--comfy-input-bg, #222); border-radius: 4px; padding: ${PADDING}px; box-sizing: border-box;
  overflow: hidden; user-select: text; }
.clip-suite-info div { white-space: pre; overflow: hidden; text-overflow: ellipsis; height: ${LINE_HEIGHT}px; }
.clip-suite-info .cs-counter { cursor: pointer; }
.clip-suite-info .cs-counter:hover { text-decoration: underline; }
.clip-suite-info .cs-dim { opacity: 0.65; }
.clip-suite-info .cs-warn { color: #f0a040; }
.clip-suite-info .cs-error { color: #f06060; }
`;

function injectStyle() {
  if (document.getElementById("clip-suite-style")) return;
  const style = document.createElement("style");
  style.id = "clip-suite-style";
  style.textContent = STYLE;
  document.head.append(style);
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

/** Whether a widget's value comes through a link (then the widget's own text is not what runs). */
function linked(node, name) {
  return node.inputs?.some((i) => i.widget?.name === name && i.link != null) ?? false;
}

function optionValues(node) {
  const values = {};
  for (const name of OPTION_WIDGETS) {
    const w = widget(node, name);
    if (w) values[name] = w.value;
  }
  return values;
}

// ----------------------------------------------------------------------------------- panel
function addPanel(node) {
  injectStyle();
  const el = document.createElement("div");
  el.className = "clip-suite-info";
  const state = node.clipSuite;
  const panel = node.addDOMWidget(PANEL, "clip_suite_info", el, {
    serialize: false, // options.serialize: left out of the API prompt
    getValue: () => "",
    setValue: () => {},
    margin: MARGIN,
    getMinHeight: () => panelHeight(state.lineCount, LINE_HEIGHT, PADDING, MARGIN),
    getMaxHeight: () => panelHeight(state.lineCount, LINE_HEIGHT, PADDING, MARGIN),
  });
  panel.serialize = false; // widget.serialize: left out of widgets_values
  placeLast(node.widgets, panel);
  el.addEventListener("click", (event) => {
    const row = event.target.closest?.("[data-counter]");
    if (!row) return;
    const counter = state.counters[row.dataset.counter];
    counter.open = !counter.open;
    render(node);
  });
  return el;
}

function line(text, cls = "", attrs = {}) {
  const div = document.createElement("div");
  div.textContent = text;
  div.title = text;
  if (cls) div.className = cls;
  Object.assign(div.dataset, attrs);
  return div;
}

function counterLines(node, name, counter) {
  const label = `${name}: `;
  if (linked(node, name)) return [line(`${label}from its input link (see the status after a run)`, "cs-dim")];
  if (counter.sameAs) return [line(`${label}empty: CLIP-L uses ${counter.sameAs}`, "cs-dim")];
  if (counter.error) return [line(`${label}${counter.error}`, "cs-error")];
  if (!counter.report) return [line(`${label}counting…`, "cs-dim")];
  const arrow = counter.open ? "▾" : "▸";
  const schedule = formatSchedule(counter.report);
  const count = formatCount(counter.report) + (schedule ? ` · ${schedule}` : "");
  const out = [line(`${arrow} ${label}${count}`, "cs-counter", { counter: name })];
  if (counter.open) out.push(...formatChunkLines(counter.report).map((t) => line(`   ${t}`, "cs-dim")));
  return out;
}

function render(node) {
  const state = node.clipSuite;
  const rows = [];
  for (const [name, counter] of Object.entries(state.counters)) rows.push(...counterLines(node, name, counter));
  if (state.model) {
    const skip = widget(node, "clip_skip")?.value ?? 0;
    const appliesTo = widget(node, "clip_skip_applies_to")?.value ?? "both";
    const changed = skip !== state.model.clip_skip || appliesTo !== state.model.applies_to;
    try {
      if (changed) {
        const { lines, warn } = clipSkipLines(state.model, skip, appliesTo);
        rows.push(line(`next run: ${lines[0]}`, warn ? "cs-warn" : ""));
        rows.push(...lines.slice(1).map((t) => line(t, t.startsWith("warning:") ? "cs-warn" : "")));
      }
      updateSkipLabel(node, skip, appliesTo);
    } catch (e) {
      // An entry without a clip_skip table (output cached by an older pack): say so, keep the rest.
      rows.push(line(`clip_skip: ${e.message}`, "cs-dim"));
    }
  } else if (ENCODE_NODES.includes(node.comfyClass)) {
    rows.push(line("clip_skip: its layer shows after a run (it depends on the model)", "cs-dim"));
  }
  if (state.status) {
    state.status.split("\n").forEach((t, i) => {
      const cls = t.startsWith("warning:") ? "cs-warn" : t.startsWith("note:") ? "cs-dim" : "";
      rows.push(line(i === 0 ? `last run: ${t}` : `  ${t}`, cls));
    });
  }
  if (SCORE_NODES.includes(node.comfyClass)) {
    if (state.scores) rows.push(...formatScores(state.scores).map((t) => line(t)));
    else rows.push(line("scores show here after a run", "cs-dim"));
  }
  if (REPORT_NODES.includes(node.comfyClass)) {
    if (state.report) rows.push(...formatReport(state.report).map((t) => line(t, t.startsWith("note:") ? "cs-dim" : "")));
    else rows.push(line("labels show here after a run", "cs-dim"));
  }
  state.el.replaceChildren(...rows);
  if (rows.length !== state.lineCount) {
    state.lineCount = rows.length;
    node.expandToFitContent?.();
  }
  node.setDirtyCanvas?.(true, true);
}

/** The clip_skip widget's label shows the layers it selects on the last run's model ("clip_skip (L 11/12)"). */
function updateSkipLabel(node, skip, appliesTo) {
  const w = widget(node, "clip_skip");
  const state = node.clipSuite;
  if (!w) return;
  state.skipLabel ??= w.label ?? w.name;
  w.label = `${state.skipLabel} (${clipSkipBadge(state.model, skip, appliesTo)})`;
}

// ----------------------------------------------------------------------------------- counters
async function count(node, name) {
  const state = node.clipSuite;
  const counter = state.counters[name];
  const text = widget(node, name)?.value ?? "";
  counter.sameAs = name === "text_l" && text.trim() === "" ? "text_g" : null;
  if (counter.sameAs || linked(node, name)) return render(node);
  const seq = ++counter.seq;
  let report = null;
  let error = null;
  try {
    const response = await api.fetchApi(ROUTE, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(tokenRequest(text, optionValues(node))),
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) report = body;
    else error = body.error ?? `the token route answered ${response.status}`;
  } catch (e) {
    error = `cannot reach the token route (${e?.message ?? e})`;
  }
  if (seq !== counter.seq || node.clipSuite !== state) return; // a newer request, or the node is gone
  Object.assign(counter, { report, error });
  render(node);
}

function scheduleAll(node) {
  for (const counter of Object.values(node.clipSuite?.counters ?? {})) counter.schedule();
}

/** Call `onChange` after a widget's own callback whenever its value changes (the callback is wrapped). */
function watch(w, onChange) {
  if (!w) return;
  const prev = w.callback;
  w.callback = function () {
    const result = prev?.apply(this, arguments);
    onChange();
    return result;
  };
}

function setup(node) {
  const names = (PROMPT_WIDGETS[node.comfyClass] ?? []).filter((n) => widget(node, n));
  node.clipSuite = { counters: {}, model: null, status: null, scores: null, report: null, lineCount: 1, el: null };
  for (const name of names) {
    const counter = { report: null, error: null, open: false, seq: 0, sameAs: null };
    counter.schedule = debounce(() => count(node, name), TYPING_DELAY_MS);
    node.clipSuite.counters[name] = counter;
    watch(widget(node, name), () => {
      counter.schedule();
      if (name === "text_g") node.clipSuite.counters.text_l?.schedule();
    });
  }
  for (const name of OPTION_WIDGETS) watch(widget(node, name), () => scheduleAll(node));
  for (const name of ["clip_skip", "clip_skip_applies_to"]) watch(widget(node, name), () => render(node));
  node.clipSuite.el = addPanel(node);
  render(node);
  scheduleAll(node);
}

// ----------------------------------------------------------------------------------- hooks
function wrap(proto, method, after) {
  const prev = proto[method];
  proto[method] = function () {
    const result = prev?.apply(this, arguments);
    after.apply(this, arguments);
    return result;
  };
}

app.registerExtension({
  name: "clip_suite.web",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!OUR_NODES.has(nodeData?.name)) return;
    wrap(nodeType.prototype, "onNodeCreated", function () {
      setup(this);
    });
    // Values loaded from a saved workflow do not go through widget callbacks: count them again.
    wrap(nodeType.prototype, "onConfigure", function () {
      if (this.clipSuite) scheduleAll(this);
    });
    wrap(nodeType.prototype, "onConnectionsChange", function () {
      if (this.clipSuite) scheduleAll(this);
    });
    wrap(nodeType.prototype, "onExecuted", function (message) {
      const state = this.clipSuite;
      if (!state) return;
      if (message?.clip_suite?.[0]) state.model = message.clip_suite[0];
      if (ENCODE_NODES.includes(this.comfyClass) && message?.text?.[0]) state.status = message.text[0];
      if (Array.isArray(message?.scores)) state.scores = message.scores;
      if (REPORT_NODES.includes(this.comfyClass) && message?.text?.[0]) state.report = message.text[0];
      render(this);
    });
    wrap(nodeType.prototype, "onRemoved", function () {
      for (const counter of Object.values(this.clipSuite?.counters ?? {})) counter.schedule.cancel();
      this.clipSuite = null;
    });
    // Another extension may add widgets after ours: keep the panel last whenever the node is saved.
    const prevSerialize = nodeType.prototype.serialize;
    nodeType.prototype.serialize = function () {
      const panel = widget(this, PANEL);
      if (panel && this.widgets) placeLast(this.widgets, panel);
      return prevSerialize.apply(this, arguments);
    };
  },
});
