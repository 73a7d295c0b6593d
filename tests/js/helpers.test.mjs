// Unit tests for web/clip_suite_helpers.js (run: node --test tests/js/).
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";

import * as h from "../../web/clip_suite_helpers.js";

const TABLE = JSON.parse(readFileSync(new URL("./clip_skip_table.json", import.meta.url), "utf8"));

describe("token counts", () => {
  const report = {
    tokens: 143,
    chunks: 2,
    chunk_tokens: [75, 68],
    boundaries: ["a garden full of", "over distant hills"],
  };

  it("formats the summary", () => {
    assert.equal(h.formatCount(report), "143 tokens, 2 chunks");
    assert.equal(h.formatCount({ tokens: 1, chunks: 1 }), "1 token, 1 chunk");
    assert.equal(h.formatCount({ tokens: 0, chunks: 1 }), "0 tokens, 1 chunk");
  });

  it("formats one line per chunk with its last words", () => {
    assert.deepEqual(h.formatChunkLines(report), [
      "chunk 1: 75/75 … a garden full of",
      "chunk 2: 68/75 … over distant hills",
    ]);
    assert.deepEqual(h.formatChunkLines({ chunk_tokens: [0], boundaries: [""] }), ["chunk 1: 0/75 (empty)"]);
  });

  it("builds the route request from widget values", () => {
    assert.deepEqual(h.tokenRequest("a cat"), { text: "a cat" });
    // No weighting input, or Prompt Tokens' "auto": the syntax that goes with the chunking, as the node uses.
    assert.deepEqual(h.tokenRequest("x", { chunking: "a1111", comma_backtrack: 20 }), {
      text: "x", chunking: "a1111", comma_backtrack: 20, weighting: "a1111",
    });
    assert.deepEqual(h.tokenRequest("x", { chunking: "a1111", weighting: "auto" }), {
      text: "x", chunking: "a1111", weighting: "a1111",
    });
    assert.deepEqual(h.tokenRequest("x", { chunking: "a1111", weighting: "none" }), {
      text: "x", chunking: "a1111", weighting: "none",
    });
    assert.deepEqual(h.tokenRequest("x", { chunking: "comfy" }), { text: "x", chunking: "comfy", weighting: "comfy" });
    assert.deepEqual(h.tokenRequest(null, { chunking: "a1111", comma_backtrack: "5", weighting: "a1111" }), {
      text: "",
      chunking: "a1111",
      comma_backtrack: 5,
      weighting: "a1111",
    });
  });
});

describe("debounce", () => {
  it("calls once, after the last call of a burst, with its arguments", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const fn = mock.fn();
    const d = h.debounce(fn, 300);
    d("a");
    t.mock.timers.tick(200);
    d("b");
    t.mock.timers.tick(200);
    d("c");
    t.mock.timers.tick(299);
    assert.equal(fn.mock.callCount(), 0);
    t.mock.timers.tick(1);
    assert.equal(fn.mock.callCount(), 1);
    assert.deepEqual(fn.mock.calls[0].arguments, ["c"]);
    t.mock.timers.tick(1000);
    assert.equal(fn.mock.callCount(), 1);
    d("d");
    t.mock.timers.tick(300);
    assert.deepEqual(fn.mock.calls.map((c) => c.arguments[0]), ["c", "d"]);
  });

  it("cancel drops a pending call; flush runs it now, once", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const fn = mock.fn();
    const d = h.debounce(fn, 100);
    d(1);
    d.cancel();
    t.mock.timers.tick(500);
    assert.equal(fn.mock.callCount(), 0);
    d(2);
    d.flush();
    assert.deepEqual(fn.mock.calls.map((c) => c.arguments[0]), [2]);
    t.mock.timers.tick(500);
    d.flush(); // nothing pending
    assert.equal(fn.mock.callCount(), 1);
  });
});

describe("clip_skip: the page reads the table the server sends (clip_skip.layer_table)", () => {
  const canon = (o) => JSON.stringify(Object.entries(o).sort());
  const tableFor = (family, towerLayers) =>
    TABLE.tables.find((t) => t.family === family && canon(t.tower_layers) === canon(towerLayers)).table;

  it(`resolves every case of the table (${TABLE.cases.length}) as Python does`, () => {
    const failures = [];
    for (const c of TABLE.cases) {
      const r = h.resolveClipSkip({ table: tableFor(c.family, c.tower_layers) }, c.clip_skip, c.applies_to);
      const expected = c.error
        ? { range: c.range, error: true }
        : {
            range: c.range,
            layers: Object.fromEntries(
              Object.entries(c.layers).map(([t, [layer, layerNorm, numLayers]]) => [
                t,
                { layer, layerNorm, numLayers },
              ]),
            ),
            describe: c.describe,
            warnings: c.warnings,
          };
      const got = r.error
        ? { range: r.range, error: true }
        : {
            range: r.range,
            layers: Object.fromEntries(
              Object.entries(r.layers).map(([t, v]) => [t, { layer: v.layer, layerNorm: v.layerNorm, numLayers: v.numLayers }]),
            ),
            describe: Object.fromEntries(Object.entries(r.layers).map(([t, v]) => [t, v.describe])),
            warnings: r.warnings,
          };
      try {
        assert.deepEqual(got, expected);
      } catch {
        failures.push(`${JSON.stringify(c)} -> ${JSON.stringify(got)}`);
      }
    }
    assert.equal(failures.length, 0, `${failures.length} cases differ, e.g.\n${failures.slice(0, 5).join("\n")}`);
  });

  it("refuses an unknown applies_to, a non-integer value, and an entry without a table", () => {
    const info = { table: tableFor("sdxl", { l: 12, g: 32 }) };
    assert.throws(() => h.resolveClipSkip(info, 0, "clip_h"), /clip_skip_applies_to/);
    assert.equal(h.resolveClipSkip(info, 1.5).error, "clip_skip 1.5 is out of range for SDXL: use -1..10");
    assert.throws(() => h.resolveClipSkip({ family: "sdxl" }, 0), /no clip_skip table/);
  });

  const sdxl = {
    family: "sdxl",
    clip_skip: 0,
    applies_to: "both",
    layers: {
      l: { layer: 11, layer_norm: false, num_layers: 12 },
      g: { layer: 31, layer_norm: false, num_layers: 32 },
    },
    table: tableFor("sdxl", { l: 12, g: 32 }),
  };

  it("describes the selection for the node", () => {
    assert.deepEqual(h.clipSkipLines(sdxl, 1, "clip_l").lines, [
      "clip_skip 1 on SDXL:",
      "  CLIP-L layer 10/12 (no LayerNorm)",
      "  CLIP-G layer 31/32 (no LayerNorm)",
    ]);
    assert.deepEqual(h.clipSkipLines(sdxl, -1), {
      lines: [
        "clip_skip -1 on SDXL:",
        "  CLIP-L layer 12/12 (no LayerNorm)",
        "  CLIP-G layer 32/32 (no LayerNorm)",
        "warning: raw final layer on CLIP-L, CLIP-G: some SDXL checkpoints give white or blank images",
      ],
      warn: true,
    });
    assert.equal(h.clipSkipLines(sdxl, 1, "clip_g").lines.at(-1), "  CLIP-G layer 30/32 (no LayerNorm)");
    assert.deepEqual(h.clipSkipLines(sdxl, 11), {
      lines: ["clip_skip 11 is out of range for SDXL: use -1..10"],
      warn: true,
    });
  });

  it("makes a short badge for the clip_skip widget", () => {
    assert.equal(h.clipSkipBadge(sdxl, 0), "L 11/12, G 31/32");
    assert.equal(h.clipSkipBadge(sdxl, 2, "clip_g"), "L 11/12, G 29/32");
    assert.equal(h.clipSkipBadge(sdxl, -1), "L 12/12 raw, G 32/32 raw");
    assert.equal(h.clipSkipBadge(sdxl, 12), "use -1..10");
    const sd1 = { family: "sd1", table: tableFor("sd1", { l: 12 }) };
    assert.equal(h.clipSkipBadge(sd1, 1), "L 11/12");
    assert.equal(h.clipSkipBadge(sd1, -1), "use 0..11");
  });

  it("carries the translation hint and tower labels from Python", () => {
    assert.match(tableFor("sdxl", { l: 12, g: 32 }).hint, /CLIPSetLastLayer -N = clip_skip N-2/);
    assert.deepEqual(tableFor("sdxl", { l: 12, g: 32 }).towers, { l: "CLIP-L", g: "CLIP-G" });
  });
});

describe("scores", () => {
  it("formats a score as the node's report does", () => {
    assert.equal(h.formatScore(31.41592), "31.4159");
    assert.equal(h.formatScore(0), "0.0000");
    assert.equal(h.formatScore(NaN), "n/a");
    assert.equal(h.formatScore(undefined), "n/a");
  });

  it("lists scores in batch order from #0, marking the best", () => {
    const lines = h.formatScores([20, 30, 10]);
    assert.equal(lines[0], "3 images: best #1 30.0000, mean 20.0000");
    assert.equal(lines.length, 4);
    assert.match(lines[1], /^#0  20\.0000  █{8}$/);
    assert.match(lines[2], /^#1  30\.0000  █{12}  ← best$/);
    assert.match(lines[3], /^#2  10\.0000  █{4}$/);
  });

  it("keeps the first of equal best scores and shortens long batches", () => {
    assert.equal(h.formatScores([0.5, 0.5])[0], "2 images: best #0 0.5000, mean 0.5000");
    const many = h.formatScores(Array.from({ length: 40 }, (_, i) => i), 16);
    assert.equal(many.length, 1 + 16 + 1);
    assert.equal(many.at(-1), "… 24 more");
    assert.equal(many[0], "40 images: best #39 39.0000, mean 19.5000");
    assert.deepEqual(h.formatScores([]), ["no scores"]);
  });
});

describe("reports", () => {
  it("shows a report's lines, skipping blank ones, and counts what does not fit", () => {
    const report = "CLIP zero-shot: 2 images, 3 labels\nlogits = cosine x 100\n  #0: cat 0.9000, dog 0.0800, fox 0.0200\n\n  #1: dog 0.5000, cat 0.3000, fox 0.2000";
    assert.deepEqual(h.formatReport(report), report.split("\n").filter((t) => t));
    const long = Array.from({ length: 30 }, (_, i) => `line ${i}`).join("\n");
    const lines = h.formatReport(long, 18);
    assert.equal(lines.length, 19);
    assert.equal(lines.at(-1), "… 12 more lines (see the report output)");
    assert.deepEqual(h.formatReport(""), ["no report"]);
    assert.ok(h.REPORT_NODES.includes("ClipSuiteZeroShot"));
  });
});

describe("module", () => {
  it("imports nothing (ComfyUI loads it in the page; node runs it here)", () => {
    const source = readFileSync(new URL("../../web/clip_suite_helpers.js", import.meta.url), "utf8");
    assert.doesNotMatch(source, /^\s*import\b/m);
  });

  it("sizes the panel by its line count", () => {
    assert.equal(h.panelHeight(3, 15, 8), 61);
    assert.equal(h.panelHeight(0, 15, 8), 31);
    assert.equal(h.panelHeight(2, 15, 6, 6), 54);
  });
});
