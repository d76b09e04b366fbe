// The chat page of `dsinfer serve` in Debian's headless Chromium, driven over the
// DevTools protocol on a pipe (--remote-debugging-pipe: no extra npm package, no port):
// the page loads, a message streams a reply, a screenshot is written and checked.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { startServer } from "./harness.mjs";

const WIDTH = 1000, HEIGHT = 700;
let server, browser, profile;

// A minimal DevTools client: NUL-separated JSON messages on fds 3 (to Chromium) and 4.
function launchChromium() {
  const exe = process.env.CHROMIUM || "/usr/bin/chromium";
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "dsinfer-chromium-"));
  const proc = spawn(exe, [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-extensions", "--remote-debugging-pipe", `--user-data-dir=${profile}`,
    `--window-size=${WIDTH},${HEIGHT}`, "about:blank",
  ], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr += d; });
  const pending = new Map();
  let nextId = 1, buffer = "";
  proc.stdio[4].on("data", (data) => {
    buffer += data.toString("utf8");
    let cut;
    while ((cut = buffer.indexOf("\0")) >= 0) {
      const msg = JSON.parse(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 1);
      const waiter = msg.id && pending.get(msg.id);
      if (!waiter) continue;
      pending.delete(msg.id);
      if (msg.error) waiter.reject(new Error(`${waiter.method}: ${msg.error.message}`));
      else waiter.resolve(msg.result);
    }
  });
  proc.on("exit", () => {
    for (const w of pending.values()) w.reject(new Error("chromium exited: " + stderr.slice(-2000)));
    pending.clear();
  });
  const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject, method });
    proc.stdio[3].write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + "\0");
  });
  return { proc, send };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  server = await startServer();
  browser = launchChromium();
});

after(async () => {
  if (browser) {
    const exited = new Promise((r) => browser.proc.exitCode !== null ? r() : browser.proc.on("exit", r));
    await Promise.race([browser.send("Browser.close").catch(() => {}), sleep(3000)]);
    if (await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]) === false) browser.proc.kill("SIGKILL");
  }
  // Chromium's helper processes may still be writing into the profile for a moment.
  if (profile) fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  await server.stop();
});

test("the chat page streams a reply and renders", { timeout: 120000 }, async () => {
  const { send } = browser;
  const { targetId } = await send("Target.createTarget", { url: server.base + "/" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const evaluate = async (expression) => {
    const r = await send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true }, sessionId);
    if (r.exceptionDetails) throw new Error(`page: ${r.exceptionDetails.text} ${JSON.stringify(r.exceptionDetails.exception)}`);
    return r.result.value;
  };
  await send("Emulation.setDeviceMetricsOverride", { width: WIDTH, height: HEIGHT, deviceScaleFactor: 1, mobile: false }, sessionId);

  // Loaded: the header shows the model /v1/models lists.
  let model = "";
  for (let i = 0; i < 200 && model !== "demo"; i++) {
    model = await evaluate("document.readyState === 'complete' ? (document.body.dataset.model || '') : ''");
    if (model !== "demo") await sleep(50);
  }
  assert.equal(model, "demo");
  assert.equal(await evaluate("document.title"), "dsinfer chat");

  // Count the reply's updates while it streams.
  await evaluate(`(() => {
    window.__updates = 0;
    new MutationObserver(() => { window.__updates++; })
      .observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
    document.getElementById('temperature').value = '0';
    document.getElementById('max_tokens').value = '48';
    document.getElementById('input').value = 'def fibonacci(n):';
    document.getElementById('form').requestSubmit();
  })()`);
  let state = "";
  for (let i = 0; i < 600 && state !== "done" && state !== "error"; i++) {
    await sleep(50);
    state = await evaluate("(document.querySelector('.assistant') || {dataset: {}}).dataset.state || ''");
  }
  assert.equal(state, "done", await evaluate("document.getElementById('log').innerText"));
  const reply = await evaluate("document.querySelector('.assistant .content').textContent");
  const updates = await evaluate("window.__updates");
  const meta = await evaluate("document.querySelector('.assistant .meta').textContent");
  assert.ok(updates >= 5, `the reply arrived in pieces (${updates} updates)`);
  assert.match(meta, /^48 tokens, /);

  // The page shows what the API gives for the same conversation.
  const r = await fetch(server.base + "/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "def fibonacci(n):" }], temperature: 0, max_tokens: 48 }),
  });
  assert.equal(reply, (await r.json()).choices[0].message.content);

  const shot = await send("Page.captureScreenshot", { format: "png" }, sessionId);
  const png = Buffer.from(shot.data, "base64");
  const file = path.join(process.env.DSINFER_TEST_OUT || os.tmpdir(), "chat_page.png");
  fs.writeFileSync(file, png);
  console.log(`screenshot: ${file} (${png.length} bytes)`);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG");
  assert.equal(png.readUInt32BE(16), WIDTH);
  assert.equal(png.readUInt32BE(20), HEIGHT);
  // A blank page compresses to a few KB; text, bubbles and the form make it larger.
  assert.ok(png.length > 15000, `${png.length} bytes`);
});
