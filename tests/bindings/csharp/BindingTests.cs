// The C# binding against the library (CTest label csharp), on Mono. One process per case:
//   mono BindingTests.exe CASE TEST_DATA_DIR DEMO_MODEL_DIR
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading;
using Dsinfer;

static class BindingTests
{
    static string data, demo;

    static void Check(bool ok, string what)
    {
        if (!ok) throw new Exception("check failed: " + what);
    }

    /// <summary>An I32 tensor of a safetensors file (8-byte header length, JSON header, data).</summary>
    static int[] TensorI32(string file, string name)
    {
        using (var f = File.OpenRead(file))
        using (var r = new BinaryReader(f))
        {
            long n = r.ReadInt64();
            string h = Encoding.UTF8.GetString(r.ReadBytes((int)n));
            var m = Regex.Match(h, "\"" + Regex.Escape(name) +
                "\":\\{\"dtype\":\"I32\",\"shape\":\\[[0-9,]*\\],\"data_offsets\":\\[([0-9]+),([0-9]+)\\]");
            Check(m.Success, name + " in " + file);
            long a = long.Parse(m.Groups[1].Value), b = long.Parse(m.Groups[2].Value);
            f.Seek(8 + n + a, SeekOrigin.Begin);
            var raw = r.ReadBytes((int)(b - a));
            var outp = new int[raw.Length / 4];
            Buffer.BlockCopy(raw, 0, outp, 0, raw.Length);
            return outp;
        }
    }

    // One compute thread: CTest runs cases in parallel and OpenMP threads would oversubscribe the cores.
    static SessionOptions Cpu(int threads = 1) => new SessionOptions { Backend = Backend.Cpu, Threads = threads };

    static void Golden()
    {
        string refFile = data + "/golden/tiny-golden.safetensors";
        foreach (var model in new[] { "tiny-bf16", "tiny-fp8" })
            foreach (var cs in new[] { "case0", "case1" })
            {
                int[] prompt = TensorI32(refFile, cs + ".input_ids"), want = TensorI32(refFile, cs + ".greedy_ids");
                using (var s = Session.Open(data + "/golden/" + model, Cpu()))
                using (var c = s.NewContext())
                using (var g = Sampler.Greedy())
                {
                    c.Eval(prompt);
                    var got = new int[want.Length];
                    for (int i = 0; i < want.Length; i++)
                    {
                        got[i] = g.Sample(c);
                        c.Eval(got[i]);
                    }
                    Check(got.SequenceEqual(want), model + " " + cs + ": " + string.Join(",", got) + " != " + string.Join(",", want));
                    Console.WriteLine(model + " " + cs + ": " + want.Length + " greedy ids equal the reference");
                }
            }
    }

    const string TEXT = "héllo 世界 — 日本語のテキスト 🎉🚀 한국어 ∑x² 👩‍💻";

    static void Utf8()
    {
        using (var t = Tokenizer.Load(demo + "/tokenizer.json"))
        {
            var ids = t.Tokenize(TEXT);
            Check(ids.Length > 0, "ids");
            Check(t.Detokenize(ids) == TEXT, "detokenize: " + t.Detokenize(ids));
            var sb = new StringBuilder();
            using (var d = t.Detokenizer())
            {
                foreach (var id in ids) sb.Append(d.Push(id));
                sb.Append(d.Flush());
            }
            Check(sb.ToString() == TEXT, "streamed: " + sb);
            Console.WriteLine(TEXT.Length + " UTF-16 units -> " + ids.Length + " ids -> the same text");
        }
        var prompt = Chat.Render("{\"messages\": [{\"role\": \"user\", \"content\": \"" + TEXT + "\"}]}");
        Check(prompt.Contains(TEXT), "render keeps the text: " + prompt);
        Check(Chat.Parse(TEXT).Contains(TEXT), "parse keeps the text");
    }

    static void ToolCall()
    {
        string user = "{\"role\": \"user\", \"content\": \"What time is it in 東京?\"}";
        string asst = "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"function\": {\"name\": \"get_datetime\"," +
                      " \"arguments\": {\"timezone\": \"Asia/Tokyo\"}}}]}";
        string before = Chat.Render("{\"messages\": [" + user + "]}");
        string with = Chat.Render("{\"messages\": [" + user + ", " + asst + "]}");
        Check(with.StartsWith(before, StringComparison.Ordinal), "prefix");
        string reply = with.Substring(before.Length);
        string result = Chat.Parse(reply);
        string want = "\"tool_calls\":[{\"name\":\"get_datetime\",\"arguments\":{\"timezone\":\"Asia/Tokyo\"}}]";
        Check(result.Contains(want), "parsed: " + result);
        using (var p = new ChatParser())
        {
            var events = new StringBuilder();
            for (int i = 0; i < reply.Length; i += 7) events.Append(p.Push(reply.Substring(i, Math.Min(7, reply.Length - i))));
            string fin = p.Finish();
            Check(fin.Contains(want), "streamed parse: " + fin);
            Check((events + fin).Contains("\"type\":\"tool_call\""), "tool_call event");
        }
        Console.WriteLine("reply " + reply.Length + " chars -> " + result);
    }

    static void Missing()
    {
        string dir = data + "/no-such-model";
        try
        {
            Session.Open(dir, Cpu()).Dispose();
            Check(false, "no exception");
        }
        catch (DsinferException e)
        {
            Console.WriteLine("exception: " + e.Message);
            Check(e.Status == Status.IO, "status " + e.StatusName);
            Check(e.Message.StartsWith("DSI_ERR_IO: ", StringComparison.Ordinal) && e.Message.Contains(dir), "message names the path");
        }
        try
        {
            Tokenizer.Load(dir + "/tokenizer.json");
            Check(false, "no exception");
        }
        catch (DsinferException e)
        {
            Check(e.Status == Status.IO && e.Message.Contains("tokenizer.json"), e.Message);
        }
    }

    static void Gc()
    {
        var rnd = new Random(7);
        for (int round = 0; round < 12; round++)
        {
            var s = Session.Open(demo, Cpu());
            var c = s.NewContext(256);
            c.Eval(new[] { 5, 6, 7 });
            var f = c.Fork();
            var smp = new Sampler(seed: (ulong)round);
            var t = s.Tokenizer();
            var own = Tokenizer.Load(demo + "/tokenizer.json");
            var d = t.Detokenizer(true);
            var d2 = own.Detokenizer();
            var p = new ChatParser(true);
            var objs = new List<IDisposable> { s, c, f, smp, t, own, d, d2, p }.OrderBy(_ => rnd.Next()).ToList();
            int keep = rnd.Next(objs.Count);
            var closed = objs.Take(keep).ToList();
            foreach (var o in closed) o.Dispose(); // the rest are dropped for the finalizers
            if (!closed.Contains(f) && !closed.Contains(smp)) f.Eval(smp.Sample(f)); // still usable whatever went first
            if (!closed.Contains(d2)) d2.Push(65);
            objs = null; closed = null; s = null; c = null; f = null; smp = null; t = null; own = null; d = null; d2 = null; p = null;
            GC.Collect();
        }
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        using (var s = Session.Open(demo, Cpu()))
        using (var c = s.NewContext(64))
        {
            c.Eval(new[] { 1, 2, 3 });
            Check(c.Length == 3, "still works");
        }
        Console.WriteLine("12 rounds of objects disposed / dropped in random order, finalized");
    }

    static long RssKb()
    {
        foreach (var line in File.ReadAllLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) return long.Parse(Regex.Replace(line, "[^0-9]", ""));
        return -1;
    }

    static void Cycles()
    {
        using (var s = Session.Open(demo, Cpu()))
        {
            long warm = 0;
            var prompt = new[] { 10, 20, 30, 40 };
            for (int i = 0; i < 1000; i++)
            {
                using (var c = s.NewContext(128))
                {
                    c.Eval(prompt);
                    c.Logits();
                }
                if (i == 99)
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    warm = RssKb();
                }
            }
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long end = RssKb();
            Console.WriteLine($"RSS after 100 cycles {warm} KiB, after 1000 cycles {end} KiB ({end - warm:+#;-#;0} KiB)");
            Check(end - warm < 8 * 1024, "resident memory grew by " + (end - warm) + " KiB");
        }
    }

    static void Threads()
    {
        using (var s = Session.Open(demo, Cpu()))
        {
            var prompt = s.Tokenizer().Tokenize("def fibonacci(n):");
            int[] want;
            using (var c = s.NewContext(256))
            using (var g = new Sampler(seed: 42))
            {
                c.Eval(prompt);
                want = c.Generate(g, 24);
            }
            var got = new int[4][];
            var err = new Exception[4];
            var ts = new Thread[4];
            for (int k = 0; k < 4; k++)
            {
                int id = k;
                ts[k] = new Thread(() =>
                {
                    try
                    {
                        using (var c = s.NewContext(256))
                        using (var g = new Sampler(seed: 42))
                        {
                            c.Eval(prompt);
                            got[id] = c.Generate(g, 24);
                        }
                    }
                    catch (Exception e) { err[id] = e; }
                });
                ts[k].Start();
            }
            foreach (var t in ts) t.Join();
            for (int k = 0; k < 4; k++)
            {
                Check(err[k] == null, "thread " + k + ": " + err[k]);
                Check(got[k].SequenceEqual(want), "thread " + k + " ids differ");
            }
            Console.WriteLine("4 threads generated the same " + want.Length + " ids");
        }
    }

    static void Callbacks()
    {
        var progress = new List<float>();
        var log = new List<string>();
        var o = Cpu();
        o.Progress = f => { lock (progress) progress.Add(f); return true; };
        o.Log = (lvl, m) => { lock (log) log.Add(m); };
        o.LogLevel = LogLevel.Info;
        using (var s = Session.Open(demo, o))
        {
            Check(progress.Count > 0 && progress[progress.Count - 1] == 1.0f, "progress ends at 1");
            Check(log.Count > 0, "session log lines");
            int polls = 0;
            using (var c = s.NewContext(128, () => Interlocked.Increment(ref polls) > 2))
            {
                try
                {
                    c.Eval(new[] { 1, 2, 3 });
                    Check(false, "not aborted");
                }
                catch (DsinferException e) { Check(e.Status == Status.Cancelled, e.Message); }
                Check(c.Length == 0, "aborted eval leaves the context unchanged");
                c.SetAbort(null);
                c.Eval(s.Tokenizer().Tokenize("import os\n"));
                var text = new StringBuilder();
                int[] ids;
                using (var smp = new Sampler(seed: 1)) ids = c.Generate(smp, 16, (id, piece) => { text.Append(piece); return true; });
                Check(text.ToString() == s.Tokenizer().Detokenize(ids, true), "streamed text equals detokenize");
                Console.WriteLine("progress " + progress.Count + " reports, " + log.Count + " log lines, streamed: " + text);
            }
            try
            {
                var cancel = Cpu();
                cancel.Progress = f => false;
                Session.Open(demo, cancel).Dispose();
                Check(false, "load not cancelled");
            }
            catch (DsinferException e) { Check(e.Status == Status.Cancelled, e.Message); }
        }
        var global = new List<string>();
        Library.SetLogger((lvl, m) => { lock (global) global.Add(m); }, LogLevel.Error);
        try { Tokenizer.Load("/nonexistent/tokenizer.json"); }
        catch (DsinferException) { }
        Library.SetLogger(null, LogLevel.None);
        Check(global.Count == 1 && global[0].Contains("/nonexistent"), "process-wide log: " + string.Join("|", global));
    }

    static void BatchState()
    {
        using (var s = Session.Open(demo, Cpu()))
        using (var a = s.NewContext(256))
        using (var b = s.NewContext(256))
        using (var r = s.NewContext(256))
        {
            s.EvalBatch(new BatchItem(a, new[] { 5, 6, 7, 8 }), new BatchItem(b, new[] { 9, 10 }));
            r.Eval(new[] { 9, 10 });
            Check(b.Logits().SequenceEqual(r.Logits()), "batch logits equal single evaluation");
            var st = s.CacheStats();
            Check(st.NContexts == 3 && st.PagesInUse >= 3 && st.PageTokens == 64, "cache stats");
            using (var smp = new Sampler(seed: 3))
            {
                var state = a.SaveState(smp);
                var first = a.Generate(smp, 8);
                using (var c = s.NewContext(256))
                using (var smp2 = new Sampler(seed: 99))
                {
                    c.LoadState(state, smp2);
                    Check(c.Generate(smp2, 8).SequenceEqual(first), "restored state continues the same");
                }
                var dir = Path.Combine(Path.GetTempPath(), "dsinfer-" + Guid.NewGuid());
                Directory.CreateDirectory(dir);
                var file = Path.Combine(dir, "état-状態.state"); // a UTF-8 path
                try
                {
                    using (var f = a.Fork())
                    using (var g = s.NewContext(256))
                    {
                        f.SaveStateFile(file);
                        g.LoadStateFile(file);
                        Check(g.Tokens().SequenceEqual(a.Tokens()) && g.Logits().SequenceEqual(a.Logits()), "state file");
                    }
                }
                finally { Directory.Delete(dir, true); }
                Console.WriteLine("batch of 2 equals single; state of " + state.Length + " bytes continues the same;" +
                                  " fork saved to " + Path.GetFileName(file) + " and loaded back");
            }
        }
    }

    /// <summary>Elements of the tensors not named *scale_inv, and bytes of all, over a checkpoint's safetensors files.</summary>
    static long[] CheckpointSizes(string dir)
    {
        long elements = 0, bytes = 0;
        foreach (string file in Directory.GetFiles(dir, "*.safetensors"))
            using (var r = new BinaryReader(File.OpenRead(file)))
            {
                string h = Encoding.UTF8.GetString(r.ReadBytes((int)r.ReadInt64()));
                foreach (Match m in Regex.Matches(h, "\"([^\"]+)\":\\{\"dtype\":\"[A-Z0-9_]+\",\"shape\":\\[([0-9,]*)\\],\"data_offsets\":\\[([0-9]+),([0-9]+)\\]"))
                {
                    long n = 1;
                    foreach (string d in m.Groups[2].Value.Split(','))
                        if (d.Length > 0) n *= long.Parse(d);
                    if (!m.Groups[1].Value.EndsWith("scale_inv")) elements += n;
                    bytes += long.Parse(m.Groups[4].Value) - long.Parse(m.Groups[3].Value);
                }
            }
        return new[] { elements, bytes };
    }

    /// <summary>Model facts, token attributes and performance counters agree with the C API and config.json.</summary>
    static void Introspection()
    {
        var m = Regex.Match(File.ReadAllText(Path.Combine(demo, "config.json")), "\"hidden_size\": *([0-9]+)");
        Check(m.Success, "hidden_size in config.json");
        using (var s = Session.Open(demo, Cpu()))
        {
            Check(s.ConfigValue("hidden_size") == long.Parse(m.Groups[1].Value), "hidden_size");
            Check(s.ConfigValue("vocab_size") == s.NVocab, "vocab_size");
            try
            {
                s.ConfigValue("no_such_key");
                Check(false, "no exception");
            }
            catch (DsinferException e)
            {
                Check(e.Status == Status.InvalidArgument, "status " + e.StatusName);
            }
            // The demo's forward pass uses every tensor of its checkpoint (no MTP layer, untied lm_head).
            long[] sizes = CheckpointSizes(demo);
            Check(s.NParams == sizes[0], "n_params " + s.NParams + " vs " + sizes[0]);
            Check(s.WeightBytes == sizes[1], "weight bytes " + s.WeightBytes + " vs " + sizes[1]);
            Check((s.TokenAttributes(s.BosToken) & TokenAttr.Control) != 0, "BOS is a control token");
            Check((s.TokenAttributes(s.EosToken) & TokenAttr.Eog) != 0, "EOS ends generation");
            int normal = s.Tokenizer().Tokenize("hello")[0];
            Check(s.TokenAttributes(normal) == TokenAttr.Normal, "normal token " + normal);
            Check(s.Tokenizer().TokenAttributes(s.BosToken) == TokenAttr.Control, "tokenizer: BOS");
            Check(s.TokenAttributes(-1) == TokenAttr.None && s.TokenAttributes(s.NVocab) == TokenAttr.None, "out of range");
            using (var c = s.NewContext(64))
            using (var smp = Sampler.Greedy())
            {
                c.Eval(new[] { 1, 2, 3, 4, 5 });
                c.Eval(6);
                smp.Sample(c);
                ContextPerf p = c.Perf;
                Check(p.PromptTokens == 5 && p.DecodeTokens == 1, "token counters " + p.PromptTokens + " " + p.DecodeTokens);
                Check(p.LoadMs > 0 && p.PromptMs >= 0 && p.DecodeMs >= 0, "times");
                c.ResetPerf();
                Check(c.Perf.PromptTokens == 0 && c.Perf.DecodeTokens == 0 && c.Perf.LoadMs == p.LoadMs, "reset");
                SamplerPerf sp = smp.Perf;
                Check(sp.Samples == 1 && sp.SampleMs >= 0, "sampler counters");
                smp.ResetPerf();
                Check(smp.Perf.Samples == 0, "sampler reset");
                Console.WriteLine("n_params " + s.NParams + ", " + s.WeightBytes + " bytes; prompt " + p.PromptMs
                                  + " ms, decode " + p.DecodeMs + " ms, sample " + sp.SampleMs + " ms");
            }
        }
    }

    static int Main(string[] args)
    {
        data = args[1];
        demo = args[2];
        try
        {
            switch (args[0])
            {
                case "golden": Golden(); break;
                case "utf8": Utf8(); break;
                case "toolcall": ToolCall(); break;
                case "missing": Missing(); break;
                case "gc": Gc(); break;
                case "cycles": Cycles(); break;
                case "threads": Threads(); break;
                case "callbacks": Callbacks(); break;
                case "batch_state": BatchState(); break;
                case "introspection": Introspection(); break;
                default: throw new ArgumentException(args[0]);
            }
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine(e);
            return 1;
        }
    }
}
