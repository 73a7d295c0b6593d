// The web counter's A1111 schedule line (web/clip_suite_helpers.js), without ComfyUI.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as h from "../../web/clip_suite_helpers.js";

test("formatSchedule: prompts over steps, a hint at steps 0, nothing without schedule syntax", () => {
  const base = { tokens: 5, chunks: 1, chunk_tokens: [5], boundaries: ["a cat"] };
  assert.equal(h.formatSchedule(base), "");
  assert.equal(h.formatSchedule({ ...base, schedule: { steps: 20, prompts: 3, has_syntax: true, entries: [] } }),
    "3 prompts over 20 steps");
  assert.equal(h.formatSchedule({ ...base, schedule: { steps: 1, prompts: 1, has_syntax: true, entries: [] } }),
    "1 prompt over 1 step");
  assert.equal(h.formatSchedule({ ...base, schedule: { steps: 0, prompts: 1, has_syntax: true, entries: [] } }),
    "schedule syntax: set steps to resolve");
  assert.equal(h.formatSchedule({ ...base, schedule: { steps: 20, prompts: 1, has_syntax: false, entries: [] } }), "");
  assert.equal(h.formatSchedule(null), "");
});

test("tokenRequest sends the encoders' steps and scheduler", () => {
  assert.deepEqual(h.tokenRequest("a [b|c]", { chunking: "a1111", weighting: "a1111", steps: "20", scheduler: "karras" }), {
    text: "a [b|c]", chunking: "a1111", weighting: "a1111", steps: 20, scheduler: "karras",
  });
  assert.deepEqual(h.tokenRequest("x", { chunking: "comfy" }), { text: "x", chunking: "comfy", weighting: "comfy" });
});
