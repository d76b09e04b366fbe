#!/usr/bin/env node
// Load test of `dsinfer serve`: N concurrent streaming chat clients for a fixed time,
// per N one Markdown table row (docs/PERF.md): requests/s, output tokens/s, time to first
// token and time per output token (p50, p99), the share of prompt tokens served from the
// cache. Plain fetch, no npm packages. Starts the server itself unless --url is given.
//
//   node scripts/bench_server.mjs [--bin build/samples/dsinfer] [--model models/demo]
//        [--clients 1,4,16] [--seconds 20] [--parallel 16] [--threads 2]
//        [--max-tokens 64] [--url http://127.0.0.1:8080] [--api-key KEY]
//
// Workload: every request shares a ~100-token system prompt and asks for a different
// function (so the prefix is cacheable and the rest is not); the end-of-sequence token
// is banned (logit_bias) so that every reply is --max-tokens long; temperature 0.
import { spawn } from "node:child_process";
import net from "node:net";

const opts = { bin: "build/samples/dsinfer", model: "models/demo", clients: "1,4,16", seconds: "20", parallel: "16",
               threads: "2", "max-tokens": "64", url: "", "api-key": "" };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "");
  if (!(key in opts) || i + 1 >= process.argv.length) {
    console.error(`bench_server: unknown or incomplete option ${process.argv[i]}`);
    process.exit(2);
  }
  opts[key] = process.argv[i + 1];
}
const maxTokens = Number(opts["max-tokens"]);
const seconds = Number(opts.seconds);
const headers = { "Content-Type": "application/json" };
if (opts["api-key"]) headers.Authorization = "Bearer " + opts["api-key"];

const system = "You are a careful Python programmer. Write small, clear functions with docstrings, " +
  "type hints and tests. Prefer the standard library. Explain nothing; write only code. ".repeat(3);

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function startServer() {
  const port = await freePort();
  const proc = spawn(opts.bin, ["serve", "--model", opts.model, "--port", String(port), "--parallel", opts.parallel,
                                "--threads", opts.threads, "--queue", "1024", "--backend", "cpu"],
                     { stdio: ["ignore", "inherit", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    try { if ((await fetch(url + "/health")).ok) return { url, proc }; } catch { /* starting */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the server did not start");
}

// One streamed request: time to first token, time per output token after it, usage.
async function request(url, n) {
  const t0 = performance.now();
  const r = await fetch(url + "/v1/chat/completions", {
    method: "POST", headers,
    body: JSON.stringify({
      messages: [{ role: "system", content: system }, { role: "user", content: `def task_${n}(data):` }],
      temperature: 0, max_tokens: maxTokens, logit_bias: { "1": -100 }, stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", first = 0, usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.usage) usage = chunk.usage;
      if (!first && chunk.choices[0]?.delta?.content) first = performance.now();
    }
  }
  const end = performance.now();
  const out = usage.completion_tokens;
  return { ttft: first - t0, tpot: out > 1 ? (end - first) / (out - 1) : 0, usage };
}

function percentile(values, p) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))];
}

async function run(url, clients) {
  const results = [];
  let counter = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < deadline) results.push(await request(url, counter++));
  }));
  const elapsed = (performance.now() - t0) / 1000;
  const sum = (f) => results.reduce((a, r) => a + f(r), 0);
  const prompt = sum((r) => r.usage.prompt_tokens), cached = sum((r) => r.usage.prompt_tokens_details.cached_tokens);
  const ttft = results.map((r) => r.ttft), tpot = results.map((r) => r.tpot);
  const f = (x, d = 1) => x.toFixed(d);
  console.log(`| ${clients} | ${results.length} | ${f(results.length / elapsed, 2)} | ${f(sum((r) => r.usage.completion_tokens) / elapsed)} | ` +
              `${f(percentile(ttft, 50))} | ${f(percentile(ttft, 99))} | ${f(percentile(tpot, 50), 2)} | ${f(percentile(tpot, 99), 2)} | ` +
              `${f(100 * cached / prompt)}% |`);
}

const server = opts.url ? { url: opts.url, proc: null } : await startServer();
try {
  console.log(`${seconds} s per row, ${maxTokens} output tokens per request, parallel ${opts.parallel}, threads ${opts.threads}\n`);
  console.log("| clients | requests | requests/s | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | cache hits |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const n of opts.clients.split(",").map(Number)) await run(server.url, n);
} finally {
  if (server.proc) server.proc.kill("SIGTERM");
}
