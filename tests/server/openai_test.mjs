// `dsinfer serve` driven by the official OpenAI client (npm "openai", pinned in
// package-lock.json): chat, streaming, cached prefixes, 16 concurrent streams against
// sequential ones, clients hanging up (mid-stream, before a whole reply), penalties over
// the generated tokens, a tool-call round trip, bad input.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";
import { metrics, requireDep, startServer } from "./harness.mjs";

const OpenAI = requireDep("openai");
const KEY = "test-key-123";
let server, client;

before(async () => {
  server = await startServer(["--parallel", "16", "--queue", "32", "--api-key", KEY, "--enable-test-hooks"]);
  client = new OpenAI({ apiKey: KEY, baseURL: server.base + "/v1", maxRetries: 0 });
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, "the server exits cleanly on SIGTERM");
});

const authHeader = { Authorization: "Bearer " + KEY };

async function streamText(params, onChunk) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  let text = "", finish = null;
  for await (const chunk of stream) {
    if (onChunk) onChunk(chunk, stream);
    const choice = chunk.choices[0];
    if (!choice) continue;
    text += choice.delta.content ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { text, finish };
}

// /metrics once the server has counted one more cancelled generation than in `before`
// (cancellation is noticed asynchronously), or after 5 s.
async function metricsAfterCancel(server, before) {
  let m;
  for (let i = 0; i < 100; i++) {
    m = await metrics(server, authHeader);
    if (m.dsinfer_generations_cancelled_total > before.dsinfer_generations_cancelled_total) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return m;
}

test("models lists the demo model", async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ["demo"]);
});

test("chat completion at temperature 0: the same reply twice, usage counted", async () => {
  const params = { model: "demo", messages: [{ role: "user", content: "def fibonacci(n):" }], temperature: 0, max_tokens: 24 };
  const a = await client.chat.completions.create(params);
  const b = await client.chat.completions.create(params);
  assert.equal(a.object, "chat.completion");
  assert.equal(a.choices[0].message.role, "assistant");
  assert.ok(a.choices[0].message.content.length > 0);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.equal(a.usage.completion_tokens, 24);
  assert.equal(a.choices[0].finish_reason, "length");
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + 24);
});

test("streaming gives the same text as the whole reply, then usage", async () => {
  const params = { model: "demo", messages: [{ role: "user", content: "import os" }], temperature: 0, max_tokens: 20 };
  const whole = await client.chat.completions.create(params);
  let chunks = 0, usage = null;
  const { text, finish } = await streamText({ ...params, stream_options: { include_usage: true } }, (c) => {
    chunks++;
    if (c.usage) usage = c.usage;
  });
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, "length");
  assert.ok(chunks > 5, `streamed in pieces (${chunks} chunks)`);
  assert.equal(usage.completion_tokens, 20);
});

test("a repeated prefix is served from the cache (cached_tokens)", async () => {
  const system = "You are a Python code generator. " + "Write clean, well documented code. ".repeat(12);
  const ask = (q) => client.chat.completions.create({
    model: "demo", temperature: 0, max_tokens: 4,
    messages: [{ role: "system", content: system }, { role: "user", content: q }],
  });
  const first = await ask("class Stack:");
  const second = await ask("def main():");
  const third = await ask("def main():");
  assert.ok(first.usage.prompt_tokens > 100, `a long prompt (${first.usage.prompt_tokens} tokens)`);
  // Everything up to the user's text is shared: the system prompt and the turn markers.
  const cached = second.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cached >= 0.8 * second.usage.prompt_tokens, `cached ${cached} of ${second.usage.prompt_tokens}`);
  assert.ok(cached < second.usage.prompt_tokens);
  // The same prompt again: all but its last token, evaluated anew for fresh logits.
  assert.equal(third.usage.prompt_tokens_details.cached_tokens, third.usage.prompt_tokens - 1);
  assert.equal(third.choices[0].message.content, second.choices[0].message.content);
});

test("16 concurrent streams equal the same requests served one at a time", async () => {
  const prompts = Array.from({ length: 16 }, (_, i) => `def function_${i}(value_${i}):`);
  const params = (p) => ({ model: "demo", temperature: 0, max_tokens: 24, messages: [{ role: "user", content: p }] });
  const sequential = [];
  for (const p of prompts) sequential.push((await streamText(params(p))).text);
  const before = await metrics(server, authHeader);
  const concurrent = await Promise.all(prompts.map((p) => streamText(params(p))));
  const afterM = await metrics(server, authHeader);
  concurrent.forEach((c, i) => assert.equal(c.text, sequential[i], `stream ${i}`));
  assert.ok(new Set(sequential).size > 1, "different prompts, different replies");
  const passes = afterM.dsinfer_batches_total - before.dsinfer_batches_total;
  const items = afterM.dsinfer_batch_items_total - before.dsinfer_batch_items_total;
  assert.ok(items >= 2 * passes, `batched: ${items} sequence steps in ${passes} passes`);
});

test("a client that hangs up mid-stream cancels its generation", async () => {
  const before = await metrics(server, authHeader);
  const stream = await client.chat.completions.create({
    model: "demo", temperature: 0, max_tokens: 400, stream: true, test_delay_ms: 10,
    messages: [{ role: "user", content: "def long_function():" }],
  });
  let received = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) received++;
    if (received === 3) break;  // leaving the loop aborts the request
  }
  const m = await metricsAfterCancel(server, before);
  assert.equal(m.dsinfer_generations_cancelled_total, before.dsinfer_generations_cancelled_total + 1);
  const generated = m.dsinfer_completion_tokens_total - before.dsinfer_completion_tokens_total;
  assert.ok(generated < 200, `stopped early: ${generated} of 400 tokens`);
  assert.equal(m.dsinfer_active_generations, 0);
  // The server still answers.
  const r = await client.chat.completions.create({ model: "demo", max_tokens: 2, messages: [{ role: "user", content: "x" }] });
  assert.equal(r.usage.completion_tokens, 2);
});

// The demo model writes no DSML, and its 512-token context cannot hold the tool
// preamble of a "tools" list: the test hook makes it "write" a tool call, token by
// token through the same path as sampled tokens.
test("tool call round trip: tool_calls reach the client, the result renders into the next prompt", async () => {
  const dsml = "Let me check.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n" +
    "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n" +
    "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n" +
    "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  const messages = [{ role: "user", content: "What is the weather in Paris?" }];
  const stream = await client.chat.completions.create({ model: "demo", messages, stream: true, test_forced_reply: dsml });
  let content = "", finish = null;
  const calls = [];
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    content += choice.delta.content ?? "";
    for (const c of choice.delta.tool_calls ?? []) calls.push(c);
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(finish, "tool_calls");
  assert.equal(content, "Let me check.");
  assert.equal(calls.length, 1);
  assert.equal(calls[0].type, "function");
  assert.equal(calls[0].function.name, "get_weather");
  assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: "Paris", days: 3 });
  assert.match(calls[0].id, /^call_/);

  // The same reply, not streamed.
  const whole = await client.chat.completions.create({ model: "demo", messages, test_forced_reply: dsml });
  assert.equal(whole.choices[0].finish_reason, "tool_calls");
  assert.equal(whole.choices[0].message.tool_calls[0].function.name, "get_weather");

  messages.push({ role: "assistant", content, tool_calls: [{ id: calls[0].id, type: "function", function: calls[0].function }] });
  messages.push({ role: "tool", tool_call_id: calls[0].id, content: "{\"forecast\": \"sunny\", \"celsius\": 22}" });
  const next = await client.chat.completions.create({ model: "demo", messages, temperature: 0, max_tokens: 8 });
  const prompt = next.test_prompt;  // echoed by --enable-test-hooks
  assert.ok(prompt.includes(dsml + "<｜end▁of▁sentence｜>"), prompt);
  assert.ok(prompt.includes("<function_results>\n<result>{\"forecast\": \"sunny\", \"celsius\": 22}</result>\n</function_results>"), prompt);
  assert.equal(next.usage.completion_tokens, 8);
});

test("thinking per request: reasoning_content in the message and in stream deltas", async () => {
  const params = {
    model: "demo", messages: [{ role: "user", content: "2+2?" }],
    chat_template_kwargs: { thinking: true }, test_forced_reply: "Adding two and two.</think>It is 4.",
  };
  const whole = await client.chat.completions.create(params);
  assert.equal(whole.choices[0].message.reasoning_content, "Adding two and two.");
  assert.equal(whole.choices[0].message.content, "It is 4.");
  assert.ok(whole.test_prompt.endsWith("<｜User｜>2+2?<｜Assistant｜><think>"), whole.test_prompt);
  let reasoning = "", content = "";
  for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
    reasoning += chunk.choices[0]?.delta?.reasoning_content ?? "";
    content += chunk.choices[0]?.delta?.content ?? "";
  }
  assert.equal(reasoning, "Adding two and two.");
  assert.equal(content, "It is 4.");
  const plain = await client.chat.completions.create({ ...params, chat_template_kwargs: { thinking: false } });
  assert.ok(plain.test_prompt.endsWith("<｜Assistant｜></think>"));
  assert.equal(plain.choices[0].message.reasoning_content, undefined);
});

test("bad input gets OpenAI error objects naming the field", async () => {
  const expectError = async (params, status, param) => {
    await assert.rejects(client.chat.completions.create({ model: "demo", ...params }), (e) => {
      assert.equal(e.status, status, e.message);
      if (param !== undefined) assert.equal(e.error?.param ?? e.param, param);
      return true;
    });
  };
  await expectError({ messages: [{ role: "robot", content: "hi" }] }, 422, "messages[0].role");
  await expectError({ messages: [{ role: "user", content: "hi" }], temperature: 7 }, 422, "temperature");
  await expectError({ messages: [{ role: "user", content: "hi" }], top_p: 0 }, 422, "top_p");
  await expectError({ messages: [{ role: "user", content: "hi" }], n: 3 }, 422, "n");
  await expectError({ messages: [{ role: "user", content: "hi" }], logit_bias: { "99999": 5 } }, 422, "logit_bias.99999");
  await expectError({ messages: [] }, 422, "messages");
  await expectError({ messages: [{ role: "user", content: "word ".repeat(2000) }] }, 400, "messages");
  await expectError({ messages: [{ role: "user", content: "hi" }], max_tokens: 100000 }, 400, "max_tokens");
  await expectError({ messages: [{ role: "user", content: "hi" }], tool_choice: "required" }, 422, "tool_choice");

  const post = (body, headers = {}) => fetch(server.base + "/v1/chat/completions",
    { method: "POST", body, headers: { "Content-Type": "application/json", ...authHeader, ...headers } });
  let r = await post("{\"messages\": [");
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /not valid JSON/);
  r = await post(JSON.stringify({ messages: [{ role: "user", content: "x".repeat(5 << 20) }] }));
  assert.equal(r.status, 413);
  assert.equal((await r.json()).error.type, "invalid_request_error");

  // Authorization.
  const wrong = new OpenAI({ apiKey: "wrong", baseURL: server.base + "/v1", maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (e) => e.status === 401);
  r = await fetch(server.base + "/v1/models");
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.code, "invalid_api_key");
  r = await fetch(server.base + "/health");
  assert.equal(r.status, 200, "health needs no key");
});

test("limits: an oversized header is refused, an idle connection is closed", async () => {
  const { default: net } = await import("node:net");
  const exchange = (data) => new Promise((resolve) => {
    const started = Date.now();
    const sock = net.connect(server.port, "127.0.0.1", () => { if (data) sock.write(data); });
    let reply = "";
    sock.on("data", (d) => { reply += d; });
    sock.on("close", () => resolve({ reply, ms: Date.now() - started }));
    sock.on("error", () => {});
  });
  const big = await exchange(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(10000)}\r\n\r\n`);
  assert.match(big.reply, /^HTTP\/1\.1 400/);
  // The server runs with --timeout 2: a client that sends nothing is dropped after it.
  const idle = await exchange("");
  assert.equal(idle.reply, "");
  assert.ok(idle.ms >= 1500 && idle.ms < 10000, `closed after ${idle.ms} ms`);
});

test("completions endpoint and stop strings", async () => {
  const params = { model: "demo", prompt: "def fibonacci(n):", temperature: 0, max_tokens: 30 };
  const full = await client.completions.create(params);
  const text = full.choices[0].text;
  assert.ok(text.length > 5);
  const stop = text.slice(4, 7);
  const cut = await client.completions.create({ ...params, stop: [stop] });
  assert.equal(cut.choices[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, "stop");
});

test("penalties count the generated tokens only, not the prompt", async () => {
  const complete = async (prompt, extra) =>
    (await client.completions.create({ model: "demo", prompt, temperature: 0, ...extra })).choices[0].text;
  // The demo model's own greedy continuation: a prompt full of what it tends to say next.
  const start = "def fibonacci(n):";
  const prompt = start + await complete(start, { max_tokens: 10 });
  const penalties = { presence_penalty: 2, frequency_penalty: 2 };
  const first = await complete(prompt, { max_tokens: 1 });
  assert.ok(first.length > 0 && prompt.includes(first), `the first token ${JSON.stringify(first)} is in the prompt`);
  // Nothing has been generated before the first token: no penalty applies to it (counting
  // the prompt, as the library's own default history does, changes it).
  assert.equal(await complete(prompt, { max_tokens: 1, ...penalties }), first);
  // Once generated, tokens are penalised.
  const plain = await complete(prompt, { max_tokens: 24 });
  const penalised = await complete(prompt, { max_tokens: 24, ...penalties });
  assert.ok(penalised.startsWith(first));
  assert.notEqual(penalised, plain);
});

test("a client that hangs up before a non-streamed reply cancels its generation", async () => {
  const before = await metrics(server, authHeader);
  const body = JSON.stringify({ model: "demo", temperature: 0, max_tokens: 400, test_delay_ms: 10,
                                messages: [{ role: "user", content: "def long_function():" }] });
  // A raw connection, so that hanging up is nothing but closing the socket.
  const socket = net.connect(server.port, "127.0.0.1");
  await new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("error", reject); });
  socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${KEY}\r\n` +
               `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  let answered = false;
  socket.on("data", () => { answered = true; });
  await new Promise((r) => setTimeout(r, 300));  // generation under way: 400 passes of >= 10 ms
  socket.destroy();
  assert.equal(answered, false, "no reply before the hang-up");
  const m = await metricsAfterCancel(server, before);
  assert.equal(m.dsinfer_generations_cancelled_total, before.dsinfer_generations_cancelled_total + 1);
  assert.ok(m.dsinfer_completion_tokens_total - before.dsinfer_completion_tokens_total < 400, "stopped early");
});

test("metrics in the Prometheus text format", async () => {
  const m = await metrics(server, authHeader);
  for (const name of ["dsinfer_requests_total", "dsinfer_prompt_tokens_total", "dsinfer_completion_tokens_total",
                      "dsinfer_cache_hit_tokens_total", "dsinfer_queue_length", "dsinfer_tokens_per_second"])
    assert.ok(Number.isFinite(m[name]), name);
  assert.ok(m.dsinfer_cache_hit_tokens_total > 0);
  assert.ok(m.dsinfer_requests_client_error_total >= 10);
});

test("a full queue answers 429", async () => {
  const small = await startServer(["--parallel", "1", "--queue", "1", "--enable-test-hooks"]);
  try {
    const c = new OpenAI({ apiKey: "none", baseURL: small.base + "/v1", maxRetries: 0 });
    const slow = { model: "demo", max_tokens: 40, test_delay_ms: 20, messages: [{ role: "user", content: "a" }] };
    const running = c.chat.completions.create(slow);
    await new Promise((r) => setTimeout(r, 300));  // the first is in the slot
    const waiting = c.chat.completions.create(slow);
    await new Promise((r) => setTimeout(r, 300));  // the second is queued
    await assert.rejects(c.chat.completions.create(slow), (e) => e.status === 429);
    await Promise.all([running, waiting]);
  } finally {
    await small.stop();
  }
});
