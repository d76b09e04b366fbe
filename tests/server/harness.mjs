// Starts `dsinfer serve` on the demo model at a free loopback port and stops it.
// Environment (set by run.sh): DSINFER_BIN, DSINFER_MODEL, DSINFER_NODE_MODULES.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import net from "node:net";

// The pinned npm packages live in the build tree, not next to the test files.
export const requireDep = createRequire(process.env.DSINFER_NODE_MODULES + "/");

// A port nobody listens on now: bound by the OS, then released for the server.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One compute thread: OpenMP's spinning threads would fight the test client (and the
// HTTP threads) for CI's two cores. A short idle timeout lets stop() finish quickly.
export async function startServer(extraArgs = []) {
  const port = await freePort();
  const args = ["serve", "--model", process.env.DSINFER_MODEL, "--port", String(port), "--backend", "cpu",
                "--threads", "1", "--timeout", "2", ...extraArgs];
  const proc = spawn(process.env.DSINFER_BIN, args, { stdio: ["ignore", "inherit", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr += d; process.stderr.write(d); });
  let exited = null;
  proc.on("exit", (code, signal) => { exited = { code, signal }; });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (exited) throw new Error(`dsinfer serve exited early (${JSON.stringify(exited)}): ${stderr}`);
    try {
      const r = await fetch(base + "/health");
      if (r.ok) break;
    } catch { /* not listening yet */ }
    await sleep(50);
  }
  return {
    port, base, proc,
    get stderr() { return stderr; },
    async stop() {
      if (exited) return exited;
      const done = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
      proc.kill("SIGTERM");
      return await done;
    },
  };
}

// GET /metrics as {name: value}.
export async function metrics(server, headers = {}) {
  const text = await (await fetch(server.base + "/metrics", { headers })).text();
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const [name, value] = line.split(" ");
    out[name] = Number(value);
  }
  return out;
}
