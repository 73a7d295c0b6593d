// Drives the real ComfyUI page in headless Chromium for tests/integration/test_comfy_web.py.
// Usage: node web_browser.cjs CONFIG.json   (CONFIG: url, chromium, userDataDir, outDir, prompt, tokens, run)
// Prints one JSON object (what it saw) on stdout; the Python test makes the assertions. playwright-core is
// resolved through NODE_PATH (CommonJS require), so it can live outside the repository.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { chromium } = require("playwright-core");

const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const OUR_SCRIPTS = /\/extensions\/comfyui-clip-suite\//;
const OURS = /clip[_-]suite/i;

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const out = { console: [], pageErrors: [], tokenRequests: [], scripts: {}, screenshots: {} };
  const context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium,
    headless: true,
    args: FLAGS,
    viewport: { width: 1500, height: 950 },
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => {
      if (msg.type() === "error" || msg.type() === "warning") {
        const where = msg.location()?.url ?? "";
        out.console.push({ type: msg.type(), text: msg.text(), url: where, ours: OURS.test(msg.text() + where) });
      }
    });
    page.on("pageerror", (err) => {
      const text = String(err.stack || err);
      out.pageErrors.push({ text, ours: OURS.test(text) });
    });
    page.on("request", (req) => {
      if (req.url().includes("/clip_suite/tokens")) out.tokenRequests.push({ phase: out.phase, url: req.url() });
    });
    page.on("response", (res) => {
      if (OUR_SCRIPTS.test(res.url())) out.scripts[new URL(res.url()).pathname] = res.status();
    });

    // 1. The page without any of our nodes.
    out.phase = "empty";
    await page.goto(config.url, { waitUntil: "load" });
    await page.waitForFunction(
      // window.app is set once the app's setup (extensions, node definitions, canvas) has finished.
      () => window.app?.canvas && window.app.extensions?.some((e) => e.name === "clip_suite.web"),
      null,
      { timeout: 120000 },
    );
    // A new user gets the template browser: close it, and load ComfyUI's default graph (core nodes only).
    await page.waitForTimeout(1500);
    await page.keyboard.press("Escape");
    await page.evaluate(() => window.comfyAPI.app.app.loadGraphData());
    await page.waitForTimeout(2500); // let late work (if any) show up
    out.emptyPage = await page.evaluate(() => {
      const app = window.comfyAPI.app.app;
      return {
        nodeTypes: app.graph.nodes.map((n) => n.type),
        panels: document.querySelectorAll(".clip-suite-info").length,
        style: !!document.getElementById("clip-suite-style"),
      };
    });
    out.screenshots.empty = path.join(config.outDir, "empty_page.png");
    await page.screenshot({ path: out.screenshots.empty });

    // 2. Our SDXL node, added from the node search box on an empty canvas, as a user adds it.
    out.phase = "sdxl";
    await page.evaluate(() => window.comfyAPI.app.app.graph.clear());
    await page.keyboard.press("Escape");
    const canvas = page.locator("#graph-canvas");
    const box = await canvas.boundingBox();
    await page.mouse.dblclick(box.x + box.width * 0.3, box.y + box.height * 0.25);
    const search = page.locator(".comfy-vue-node-search-container input, input[placeholder*='Search']").first();
    await search.waitFor({ timeout: 15000 });
    await search.fill("SDXL Text Encode (CLIP skip");
    await page.waitForTimeout(800);
    await page.keyboard.press("Enter");
    await page.waitForFunction(
      () => window.comfyAPI.app.app.graph.nodes.some((n) => n.type === "ClipSuiteTextEncodeSDXL"),
      null,
      { timeout: 15000 },
    );
    const textarea = await page.evaluateHandle(() => {
      const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
      return node.widgets.find((w) => w.name === "text_g").element;
    });
    await textarea.asElement().click();
    await page.keyboard.type(config.prompt, { delay: 2 });
    const want = `text_g: ${config.tokens} tokens, 2 chunks`;
    await waitPanel(page, "ClipSuiteTextEncodeSDXL", want);
    out.typed = await panelState(page, "ClipSuiteTextEncodeSDXL");
    // Click the counter: the chunk list with the last words of each chunk opens.
    await page.locator(".clip-suite-info [data-counter='text_g']").click();
    await waitPanel(page, "ClipSuiteTextEncodeSDXL", "chunk 2:");
    out.opened = await panelState(page, "ClipSuiteTextEncodeSDXL");
    out.screenshots.sdxl = path.join(config.outDir, "sdxl_node_typed.png");
    await page.screenshot({ path: out.screenshots.sdxl });

    // 3. The workflow saved and loaded again keeps every widget value.
    out.phase = "roundtrip";
    out.roundtrip = await page.evaluate(async () => {
      const app = window.comfyAPI.app.app;
      const valuesByName = (node) =>
        Object.fromEntries(node.widgets.filter((w) => w.serialize !== false).map((w) => [w.name, w.value]));
      const node = app.graph.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
      const before = valuesByName(node);
      const widgetNames = node.widgets.map((w) => w.name);
      const saved = JSON.parse(JSON.stringify(app.graph.serialize()));
      const savedNode = saved.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
      const prompt = (await app.graphToPrompt()).output[String(node.id)]?.inputs ?? null;
      await app.loadGraphData(saved);
      const reloaded = app.graph.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
      return {
        widgetNames,
        before,
        widgetsValues: savedNode.widgets_values,
        after: valuesByName(reloaded),
        afterWidgetNames: reloaded.widgets.map((w) => w.name),
        apiInputs: prompt,
      };
    });

    // 4. A run (tiny SDXL checkpoint): the node shows the run's status and what clip_skip selects.
    if (config.run) {
      out.phase = "run";
      await page.evaluate((api) => window.comfyAPI.app.app.loadApiJson(api, "clip_suite_web_test.json"), config.run);
      await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
      await page.waitForFunction(
        () => {
          const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
          return node?.clipSuite?.status;
        },
        null,
        { timeout: 120000 },
      );
      await waitPanel(page, "ClipSuiteTextEncodeSDXL", want);
      await waitPanel(page, "ClipSuitePromptTokens", "text: ");
      out.promptTokens = await panelState(page, "ClipSuitePromptTokens");
      out.afterRun = await panelState(page, "ClipSuiteTextEncodeSDXL");
      // A new clip_skip shows its layers before the next run (-1 on SDXL: the raw final layer, a warning).
      await page.evaluate(() => {
        const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
        const w = node.widgets.find((x) => x.name === "clip_skip");
        w.value = -1;
        w.callback?.(w.value);
      });
      await waitPanel(page, "ClipSuiteTextEncodeSDXL", "next run");
      out.skipChanged = await panelState(page, "ClipSuiteTextEncodeSDXL");
      await page.evaluate(() => {
        const app = window.comfyAPI.app.app;
        const node = app.graph.nodes.find((n) => n.type === "ClipSuiteTextEncodeSDXL");
        app.canvas.selectNode?.(node);
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [-node.pos[0] + 450, -node.pos[1] + 120];
        app.canvas.setDirty(true, true);
      });
      await page.waitForTimeout(500);
      out.screenshots.run = path.join(config.outDir, "sdxl_node_after_run.png");
      await page.screenshot({ path: out.screenshots.run });
    }
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out));
}

/** Wait until the panel of the first node of a type shows `text`. */
function waitPanel(page, type, text, timeout = 20000) {
  return page.waitForFunction(
    ([t, want]) => {
      const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.type === t);
      return node?.clipSuite?.el?.textContent.includes(want);
    },
    [type, text],
    { timeout },
  );
}

/** The panel's lines and the clip_skip widget's label of the first node of a type. */
function panelState(page, type) {
  return page.evaluate((t) => {
    const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.type === t);
    const lines = [...(node?.clipSuite?.el?.children ?? [])].map((d) => d.textContent);
    const skip = node?.widgets.find((w) => w.name === "clip_skip");
    return { lines, skipLabel: skip?.label ?? null, widgetNames: node?.widgets.map((w) => w.name) ?? [] };
  }, type);
}

main().catch((err) => {
  process.stderr.write(String(err.stack || err) + "\n");
  process.exit(1);
});
