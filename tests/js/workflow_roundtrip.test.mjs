// A saved workflow keeps our nodes' widget values with the extension's panel widget in place.
//
// saveValues/loadValues model what ComfyUI frontend 1.27's litegraph does (LGraphNode.serialize and
// LGraphNode.configure): saving writes widgets_values[i] for each widget index i, skipping widgets with
// serialize === false (a hole, null in JSON); loading assigns widgets_values in order to the widgets with
// serialize !== false. The browser test (tests/integration/test_web_browser.py) checks the real thing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { placeLast } from "../../web/clip_suite_helpers.js";

function saveValues(widgets) {
  const values = [];
  for (const [i, w] of widgets.entries()) {
    if (w.serialize === false) continue;
    values[i] = w.value;
  }
  return JSON.parse(JSON.stringify(values)); // as the workflow file stores it
}

function loadValues(widgets, values) {
  const withValue = widgets.filter((w) => w.serialize !== false);
  values.forEach((v, i) => {
    if (withValue[i]) withValue[i].value = v;
  });
}

const SDXL = {
  text_g: "a castle on a hill",
  text_l: "oil painting",
  clip_skip: 1,
  clip_skip_applies_to: "clip_l",
  chunking: "a1111",
  comma_backtrack: 12,
  weighting: "a1111",
  pooled: "mean",
  empty_prompt: "zeros",
  width: 832,
  height: 1216,
  crop_w: 16,
  crop_h: 8,
  target_width: 896,
  target_height: 1152,
};

/** A node's widget list as the frontend builds it, then our panel added the way clip_suite.js adds it. */
function nodeWidgets(values, insertPanelAt = null) {
  const widgets = Object.entries(values).map(([name, value]) => ({ name, value }));
  const panel = { name: "clip_suite_info", value: "", serialize: false };
  if (insertPanelAt === null) {
    widgets.push(panel);
    placeLast(widgets, panel);
  } else {
    widgets.splice(insertPanelAt, 0, panel);
  }
  return { widgets, panel };
}

function byName(widgets) {
  return Object.fromEntries(widgets.filter((w) => w.serialize !== false).map((w) => [w.name, w.value]));
}

function defaults() {
  return Object.fromEntries(Object.keys(SDXL).map((k) => [k, typeof SDXL[k] === "number" ? 0 : ""]));
}

describe("workflow round trip", () => {
  it("keeps every value with the panel after the real widgets", () => {
    const saved = saveValues(nodeWidgets(SDXL).widgets);
    assert.deepEqual(saved, Object.values(SDXL)); // no hole, no extra value: same as without the extension
    const loaded = nodeWidgets(defaults()).widgets;
    loadValues(loaded, saved);
    assert.deepEqual(byName(loaded), SDXL);
  });

  it("would shift values with a display widget between real ones (the trap the placement avoids)", () => {
    const saved = saveValues(nodeWidgets(SDXL, 2).widgets);
    assert.equal(saved[2], null); // the hole
    const loaded = nodeWidgets(defaults(), 2).widgets;
    loadValues(loaded, saved);
    assert.notDeepEqual(byName(loaded), SDXL);
    assert.equal(byName(loaded).clip_skip, null); // clip_skip got the hole, everything after it shifted
  });

  it("moves the panel back to the end when another widget was added after it", () => {
    const { widgets, panel } = nodeWidgets(SDXL);
    widgets.push({ name: "extra", value: 7 }); // e.g. another extension's widget
    assert.equal(placeLast(widgets, panel), widgets.length - 1);
    assert.deepEqual(saveValues(widgets), [...Object.values(SDXL), 7]);
    assert.equal(placeLast(widgets, panel), widgets.length - 1); // idempotent
    assert.equal(placeLast(widgets, { name: "not there" }), -1);
  });
});
