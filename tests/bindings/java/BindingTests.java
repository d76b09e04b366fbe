// The Java binding against the library (CTest label java). One JVM per case:
//   java -cp dsinfer.jar:tests BindingTests CASE TEST_DATA_DIR DEMO_MODEL_DIR
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.dsinfer.Chat;
import org.dsinfer.ChatParser;
import org.dsinfer.Context;
import org.dsinfer.Detokenizer;
import org.dsinfer.Dsinfer;
import org.dsinfer.DsinferException;
import org.dsinfer.Sampler;
import org.dsinfer.Session;
import org.dsinfer.Status;
import org.dsinfer.Tokenizer;

public class BindingTests {
    static String data, demo;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    /** An I32 tensor of a safetensors file (header: 8-byte length, JSON; then the data). */
    static int[] tensorI32(String file, String name) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(file, "r")) {
            byte[] len = new byte[8];
            f.readFully(len);
            long n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getLong();
            byte[] header = new byte[(int) n];
            f.readFully(header);
            String h = new String(header, StandardCharsets.UTF_8);
            Matcher m = Pattern.compile("\"" + Pattern.quote(name)
                + "\":\\{\"dtype\":\"I32\",\"shape\":\\[[0-9,]*\\],\"data_offsets\":\\[([0-9]+),([0-9]+)\\]").matcher(h);
            check(m.find(), name + " in " + file);
            long a = Long.parseLong(m.group(1)), b = Long.parseLong(m.group(2));
            byte[] raw = new byte[(int) (b - a)];
            f.seek(8 + n + a);
            f.readFully(raw);
            int[] out = new int[raw.length / 4];
            ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(out);
            return out;
        }
    }

    // One compute thread: CTest runs cases in parallel and OpenMP threads would oversubscribe the cores.
    static Session.Options cpu() { return new Session.Options().backend("cpu").threads(1); }

    /** Greedy ids of both golden cases on both checkpoints equal the reference. */
    static void golden() throws Exception {
        String ref = data + "/golden/tiny-golden.safetensors";
        for (String model : new String[] {"tiny-bf16", "tiny-fp8"})
            for (String cs : new String[] {"case0", "case1"}) {
                int[] prompt = tensorI32(ref, cs + ".input_ids"), want = tensorI32(ref, cs + ".greedy_ids");
                try (Session s = Session.open(data + "/golden/" + model, cpu());
                     Context c = s.newContext(); Sampler g = Sampler.greedy()) {
                    c.eval(prompt);
                    int[] got = new int[want.length];
                    for (int i = 0; i < want.length; i++) {
                        got[i] = g.sample(c);
                        c.eval(got[i]);
                    }
                    check(Arrays.equals(got, want), model + " " + cs + ": " + Arrays.toString(got) + " != " + Arrays.toString(want));
                    System.out.println(model + " " + cs + ": " + want.length + " greedy ids equal the reference");
                }
            }
    }

    static final String TEXT = "héllo 世界 — 日本語のテキスト 🎉🚀 한국어 ∑x² 👩‍💻";

    /** CJK and emoji through tokenize / detokenize / the streaming decoder / chat render. */
    static void utf8() {
        try (Tokenizer t = Tokenizer.load(demo + "/tokenizer.json")) {
            int[] ids = t.tokenize(TEXT);
            check(ids.length > 0, "ids");
            check(t.detokenize(ids).equals(TEXT), "detokenize: " + t.detokenize(ids));
            StringBuilder sb = new StringBuilder();
            try (Detokenizer d = t.detokenizer(false)) {
                for (int id : ids) sb.append(d.push(id));
                sb.append(d.flush());
            }
            check(sb.toString().equals(TEXT), "streamed: " + sb);
            System.out.println(TEXT.length() + " UTF-16 units -> " + ids.length + " ids -> the same text");
        }
        String prompt = Chat.render("{\"messages\": [{\"role\": \"user\", \"content\": \"" + TEXT + "\"}]}", false);
        check(prompt.contains(TEXT), "render keeps the text: " + prompt);
        String parsed = Chat.parse(TEXT, false);
        check(parsed.contains(TEXT), "parse keeps the text: " + parsed);
    }

    /** A tool call written by render is parsed back (whole and streamed). */
    static void toolcall() {
        String user = "{\"role\": \"user\", \"content\": \"What time is it in 東京?\"}";
        String asst = "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"function\": {\"name\": \"get_datetime\","
                      + " \"arguments\": {\"timezone\": \"Asia/Tokyo\"}}}]}";
        String before = Chat.render("{\"messages\": [" + user + "]}", false);
        String with = Chat.render("{\"messages\": [" + user + ", " + asst + "]}", false);
        check(with.startsWith(before), "prefix");
        String reply = with.substring(before.length());
        check(reply.contains("get_datetime"), "DSML in reply: " + reply);
        String result = Chat.parse(reply, false);
        String want = "\"tool_calls\":[{\"name\":\"get_datetime\",\"arguments\":{\"timezone\":\"Asia/Tokyo\"}}]";
        check(result.contains(want), "parsed: " + result);
        try (ChatParser p = new ChatParser(false)) {
            StringBuilder events = new StringBuilder();
            for (int i = 0; i < reply.length(); i += 7) events.append(p.push(reply.substring(i, Math.min(reply.length(), i + 7))));
            String fin = p.finish();
            check(fin.contains(want), "streamed parse: " + fin);
            check((events + fin).contains("\"type\":\"tool_call\""), "tool_call event");
        }
        System.out.println("reply " + reply.length() + " chars -> " + result);
    }

    /** A missing model: DsinferException with the status and the library's message. */
    static void missing() {
        String dir = data + "/no-such-model";
        try {
            Session.open(dir, cpu()).close();
            check(false, "no exception");
        } catch (DsinferException e) {
            System.out.println("exception: " + e.getMessage());
            check(e.status() == Status.IO, "status " + e.statusName());
            check(e.getMessage().startsWith("DSI_ERR_IO: ") && e.getMessage().contains(dir), "message names the path");
        }
        try {
            Tokenizer.load(dir + "/tokenizer.json");
            check(false, "no exception");
        } catch (DsinferException e) {
            check(e.status() == Status.IO && e.getMessage().contains("tokenizer.json"), e.getMessage());
        }
    }

    /** Objects closed, or just dropped for the collector, in random orders: no crash. */
    static void gc() throws Exception {
        Random rnd = new Random(7);
        for (int round = 0; round < 12; round++) {
            List<AutoCloseable> objs = new ArrayList<>();
            Session s = Session.open(demo, cpu());
            Context c = s.newContext(256, null);
            Context f;
            c.eval(5, 6, 7);
            f = c.fork();
            Sampler smp = new Sampler(round);
            Tokenizer t = s.tokenizer();
            Tokenizer own = Tokenizer.load(demo + "/tokenizer.json");
            Detokenizer d = t.detokenizer(true), d2 = own.detokenizer(false);
            ChatParser p = new ChatParser(true);
            Collections.addAll(objs, s, c, f, smp, t, own, d, d2, p);
            Collections.shuffle(objs, rnd);
            int keep = rnd.nextInt(objs.size());
            for (int i = 0; i < keep; i++) objs.get(i).close(); // the rest are dropped
            if (!objs.subList(0, keep).contains(f) && !objs.subList(0, keep).contains(smp)) f.eval(smp.sample(f)); // still usable whatever went first
            if (!objs.subList(0, keep).contains(d2)) d2.push(65);
            objs = null; s = null; c = null; f = null; smp = null; t = null; own = null; d = null; d2 = null; p = null;
            System.gc();
        }
        for (int i = 0; i < 5; i++) {
            System.gc();
            Thread.sleep(50);
        }
        try (Session s = Session.open(demo, cpu()); Context c = s.newContext(64, null)) {
            c.eval(1, 2, 3);
            check(c.length() == 3, "still works");
        }
        System.out.println("12 rounds of objects closed / dropped in random order, collected");
    }

    static long rssKb() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status")))
            if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        return -1;
    }

    /** 1,000 create / eval / close cycles of a context: resident memory stays flat. */
    static void cycles() throws Exception {
        try (Session s = Session.open(demo, cpu())) {
            long warm = 0;
            int[] prompt = {10, 20, 30, 40};
            for (int i = 0; i < 1000; i++) {
                try (Context c = s.newContext(128, null)) {
                    c.eval(prompt);
                    c.logits();
                }
                if (i == 99) {
                    System.gc();
                    warm = rssKb();
                }
            }
            System.gc();
            long end = rssKb();
            System.out.printf("RSS after 100 cycles %d KiB, after 1000 cycles %d KiB (%+d KiB)%n", warm, end, end - warm);
            check(end - warm < 8 * 1024, "resident memory grew by " + (end - warm) + " KiB");
        }
    }

    /** 4 threads generating at once from one session, each its own context: the single-thread ids. */
    static void threads() throws Exception {
        try (Session s = Session.open(demo, cpu())) {
            int[] prompt = s.tokenizer().tokenize("def fibonacci(n):");
            int[] want;
            try (Context c = s.newContext(256, null); Sampler g = new Sampler(42)) {
                c.eval(prompt);
                want = c.generate(g, 24, null);
            }
            int[][] got = new int[4][];
            Throwable[] err = new Throwable[4];
            Thread[] ts = new Thread[4];
            for (int k = 0; k < 4; k++) {
                final int id = k;
                ts[k] = new Thread(() -> {
                    try (Context c = s.newContext(256, null); Sampler g = new Sampler(42)) {
                        c.eval(prompt);
                        got[id] = c.generate(g, 24, null);
                    } catch (Throwable t) {
                        err[id] = t;
                    }
                });
                ts[k].start();
            }
            for (Thread t : ts) t.join();
            for (int k = 0; k < 4; k++) {
                check(err[k] == null, "thread " + k + ": " + err[k]);
                check(Arrays.equals(got[k], want), "thread " + k + " ids differ");
            }
            System.out.println("4 threads generated the same " + want.length + " ids");
        }
    }

    /** Progress, log, abort and streamed-token callbacks. */
    static void callbacks() {
        List<Float> progress = Collections.synchronizedList(new ArrayList<>());
        List<String> log = Collections.synchronizedList(new ArrayList<>());
        try (Session s = Session.open(demo, cpu().progress(f -> progress.add(f)).log((lvl, m) -> log.add(m), Dsinfer.LOG_INFO))) {
            check(!progress.isEmpty() && progress.get(progress.size() - 1) == 1.0f, "progress ends at 1: " + progress);
            check(!log.isEmpty(), "session log lines");
            AtomicInteger polls = new AtomicInteger();
            try (Context c = s.newContext(128, () -> polls.incrementAndGet() > 2)) {
                try {
                    c.eval(1, 2, 3);
                    check(false, "not aborted");
                } catch (DsinferException e) {
                    check(e.status() == Status.CANCELLED, e.getMessage());
                }
                check(c.length() == 0, "aborted eval leaves the context unchanged");
                c.setAbort(null);
                int[] prompt = s.tokenizer().tokenize("import os\n");
                c.eval(prompt);
                StringBuilder text = new StringBuilder();
                int[] ids;
                try (Sampler smp = new Sampler(1)) {
                    ids = c.generate(smp, 16, (id, piece) -> { text.append(piece); return true; });
                }
                check(text.toString().equals(s.tokenizer().detokenize(ids, true)), "streamed text equals detokenize");
                System.out.println("progress " + progress.size() + " reports, " + log.size() + " log lines, streamed: " + text);
            }
            try {
                Session.open(demo, cpu().progress(f -> false)).close();
                check(false, "load not cancelled");
            } catch (DsinferException e) {
                check(e.status() == Status.CANCELLED, e.getMessage());
            }
        }
        List<String> global = Collections.synchronizedList(new ArrayList<>());
        Dsinfer.setLogger((lvl, m) -> global.add(m), Dsinfer.LOG_ERROR);
        try {
            Tokenizer.load("/nonexistent/tokenizer.json");
        } catch (DsinferException expected) {
            // logged
        }
        Dsinfer.setLogger(null, Dsinfer.LOG_NONE);
        check(global.size() == 1 && global.get(0).contains("/nonexistent"), "process-wide log: " + global);
    }

    /** Batched evaluation equals one-by-one; saved state continues exactly. */
    static void batchState() throws Exception {
        try (Session s = Session.open(demo, cpu()); Context a = s.newContext(256, null); Context b = s.newContext(256, null);
             Context ref = s.newContext(256, null)) {
            int[] pa = {5, 6, 7, 8}, pb = {9, 10};
            s.evalBatch(new Session.BatchItem(a, pa), new Session.BatchItem(b, pb));
            ref.eval(pb);
            check(Arrays.equals(b.logits(), ref.logits()), "batch logits equal single evaluation");
            Session.CacheStats st = s.cacheStats();
            check(st.nContexts == 3 && st.pagesInUse >= 3 && st.pageTokens == 64, "cache stats");
            try (Sampler smp = new Sampler(3)) {
                byte[] state = a.saveState(smp);
                int[] first = a.generate(smp, 8, null);
                try (Context c = s.newContext(256, null); Sampler smp2 = new Sampler(99)) {
                    c.loadState(state, smp2);
                    check(Arrays.equals(c.generate(smp2, 8, null), first), "restored state continues the same");
                }
                Path file = Files.createTempDirectory("dsinfer").resolve("état-状態.state"); // a UTF-8 path
                try (Context f = a.fork(); Context g = s.newContext(256, null)) {
                    f.saveStateFile(file.toString(), null);
                    g.loadStateFile(file.toString(), null);
                    check(Arrays.equals(g.tokens(), a.tokens()) && Arrays.equals(g.logits(), a.logits()), "state file");
                } finally {
                    Files.deleteIfExists(file);
                    Files.deleteIfExists(file.getParent());
                }
                System.out.println("batch of 2 equals single; state of " + state.length + " bytes continues the same;"
                                   + " fork saved to " + file.getFileName() + " and loaded back");
            }
        }
    }

    /** Elements of the tensors not named *scale_inv, and bytes of all, over a checkpoint's safetensors files. */
    static long[] checkpointSizes(String dir) throws Exception {
        long elements = 0, bytes = 0;
        Pattern t = Pattern.compile("\"([^\"]+)\":\\{\"dtype\":\"[A-Z0-9_]+\",\"shape\":\\[([0-9,]*)\\],\"data_offsets\":\\[([0-9]+),([0-9]+)\\]");
        try (var files = Files.list(Path.of(dir))) {
            for (Path f : (Iterable<Path>) files.filter(x -> x.toString().endsWith(".safetensors"))::iterator) {
                try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "r")) {
                    byte[] len = new byte[8];
                    r.readFully(len);
                    byte[] header = new byte[(int) ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getLong()];
                    r.readFully(header);
                    Matcher m = t.matcher(new String(header, StandardCharsets.UTF_8));
                    while (m.find()) {
                        long n = 1;
                        for (String d : m.group(2).split(",")) if (!d.isEmpty()) n *= Long.parseLong(d);
                        if (!m.group(1).endsWith("scale_inv")) elements += n;
                        bytes += Long.parseLong(m.group(4)) - Long.parseLong(m.group(3));
                    }
                }
            }
        }
        return new long[] {elements, bytes};
    }

    /** Model facts, token attributes and performance counters agree with the C API and config.json. */
    static void introspection() throws Exception {
        String config = new String(Files.readAllBytes(Path.of(demo, "config.json")), StandardCharsets.UTF_8);
        Matcher m = Pattern.compile("\"hidden_size\": *([0-9]+)").matcher(config);
        check(m.find(), "hidden_size in config.json");
        try (Session s = Session.open(demo, cpu())) {
            check(s.configValue("hidden_size") == Long.parseLong(m.group(1)), "hidden_size");
            check(s.configValue("vocab_size") == s.nVocab(), "vocab_size");
            try {
                s.configValue("no_such_key");
                check(false, "no exception");
            } catch (DsinferException e) {
                check(e.status() == Status.INVALID_ARGUMENT, "status " + e.statusName());
            }
            // The demo's forward pass uses every tensor of its checkpoint (no MTP layer, untied lm_head).
            long[] sizes = checkpointSizes(demo);
            check(s.nParams() == sizes[0], "n_params " + s.nParams() + " vs " + sizes[0]);
            check(s.weightBytes() == sizes[1], "weight bytes " + s.weightBytes() + " vs " + sizes[1]);
            int bos = s.bosToken(), eos = s.eosToken();
            check((s.tokenAttr(bos) & Tokenizer.ATTR_CONTROL) != 0, "BOS is a control token");
            check((s.tokenAttr(eos) & Tokenizer.ATTR_EOG) != 0, "EOS ends generation");
            int normal = s.tokenizer().tokenize("hello")[0];
            check(s.tokenAttr(normal) == Tokenizer.ATTR_NORMAL, "normal token " + normal);
            check(s.tokenizer().tokenAttr(bos) == Tokenizer.ATTR_CONTROL, "tokenizer: BOS");
            check(s.tokenAttr(-1) == Tokenizer.ATTR_NONE && s.tokenAttr(s.nVocab()) == Tokenizer.ATTR_NONE, "out of range");
            try (Context c = s.newContext(64, null); Sampler smp = Sampler.greedy()) {
                c.eval(1, 2, 3, 4, 5);
                c.eval(6);
                smp.sample(c);
                Context.Perf p = c.perf();
                check(p.promptTokens == 5 && p.decodeTokens == 1, "token counters " + p.promptTokens + " " + p.decodeTokens);
                check(p.loadMs > 0 && p.promptMs >= 0 && p.decodeMs >= 0, "times");
                c.resetPerf();
                check(c.perf().promptTokens == 0 && c.perf().decodeTokens == 0 && c.perf().loadMs == p.loadMs, "reset");
                Sampler.Perf sp = smp.perf();
                check(sp.samples == 1 && sp.sampleMs >= 0, "sampler counters");
                smp.resetPerf();
                check(smp.perf().samples == 0, "sampler reset");
                System.out.println("n_params " + s.nParams() + ", " + s.weightBytes() + " bytes; prompt " + p.promptMs
                                   + " ms, decode " + p.decodeMs + " ms, sample " + sp.sampleMs + " ms");
            }
        }
    }

    public static void main(String[] args) throws Exception {
        data = args[1];
        demo = args[2];
        switch (args[0]) {
            case "golden": golden(); break;
            case "utf8": utf8(); break;
            case "toolcall": toolcall(); break;
            case "missing": missing(); break;
            case "gc": gc(); break;
            case "cycles": cycles(); break;
            case "threads": threads(); break;
            case "callbacks": callbacks(); break;
            case "batch_state": batchState(); break;
            case "introspection": introspection(); break;
            default: throw new IllegalArgumentException(args[0]);
        }
    }
}
