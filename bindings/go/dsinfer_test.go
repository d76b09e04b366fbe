package dsinfer

// The Go binding against the library (CTest label go: the test binary is built once by
// CMake and each case runs as go_<case>). Data: DSINFER_TEST_DATA (tests/data) and
// DSINFER_DEMO_MODEL (models/demo), by default relative to this directory.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

func testData() string  { return envOr("DSINFER_TEST_DATA", "../../tests/data") }
func demoModel() string { return envOr("DSINFER_DEMO_MODEL", "../../models/demo") }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// One compute thread: CTest runs cases in parallel and OpenMP threads would oversubscribe.
func cpu() *Options { return &Options{Backend: "cpu", Threads: 1} }

// ok returns v, or panics with err (which fails the test).
func ok[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func noErr(err error) {
	if err != nil {
		panic(err)
	}
}

// tensorI32 reads an I32 tensor of a safetensors file (8-byte header length, JSON, data).
func tensorI32(t *testing.T, file, name string) []int32 {
	raw := ok(os.ReadFile(file))
	n := binary.LittleEndian.Uint64(raw[:8])
	var header map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &header); err != nil {
		t.Fatal(err)
	}
	var info struct {
		Dtype       string  `json:"dtype"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(header[name], &info); err != nil || info.Dtype != "I32" {
		t.Fatalf("%s in %s: %v %s", name, file, err, info.Dtype)
	}
	data := raw[8+int64(n)+info.DataOffsets[0] : 8+int64(n)+info.DataOffsets[1]]
	out := make([]int32, len(data)/4)
	if err := binary.Read(bytes.NewReader(data), binary.LittleEndian, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGolden(t *testing.T) {
	ref := testData() + "/golden/tiny-golden.safetensors"
	for _, model := range []string{"tiny-bf16", "tiny-fp8"} {
		for _, cs := range []string{"case0", "case1"} {
			prompt, want := tensorI32(t, ref, cs+".input_ids"), tensorI32(t, ref, cs+".greedy_ids")
			s := ok(Open(testData()+"/golden/"+model, cpu()))
			c := ok(s.NewContext(0, nil))
			g := ok(Greedy())
			noErr(c.Eval(prompt...))
			got := make([]int32, len(want))
			for i := range want {
				got[i] = ok(g.Sample(c))
				noErr(c.Eval(got[i]))
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %s: %v != %v", model, cs, got, want)
			}
			t.Logf("%s %s: %d greedy ids equal the reference", model, cs, len(want))
			g.Close()
			c.Close()
			s.Close()
		}
	}
}

const text = "héllo 世界 — 日本語のテキスト 🎉🚀 한국어 ∑x² 👩‍💻"

func TestUTF8(t *testing.T) {
	tok := ok(LoadTokenizer(demoModel() + "/tokenizer.json"))
	defer tok.Close()
	ids := ok(tok.Tokenize(text, 0))
	if back := ok(tok.Detokenize(ids, false)); back != text {
		t.Fatalf("detokenize: %q", back)
	}
	d := ok(tok.Detokenizer(false))
	defer d.Close()
	var sb strings.Builder
	for _, id := range ids {
		sb.WriteString(ok(d.Push(id)))
	}
	sb.WriteString(ok(d.Flush()))
	if sb.String() != text {
		t.Fatalf("streamed: %q", sb.String())
	}
	prompt := ok(RenderChat(`{"messages": [{"role": "user", "content": "`+text+`"}]}`, false))
	if !strings.Contains(prompt, text) {
		t.Fatalf("render: %q", prompt)
	}
	if p := ok(ParseChat(text, false)); !strings.Contains(p, text) {
		t.Fatalf("parse: %q", p)
	}
	t.Logf("%d bytes -> %d ids -> the same text", len(text), len(ids))
}

func TestToolCall(t *testing.T) {
	user := `{"role": "user", "content": "What time is it in 東京?"}`
	asst := `{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_datetime", "arguments": {"timezone": "Asia/Tokyo"}}}]}`
	before := ok(RenderChat(`{"messages": [`+user+`]}`, false))
	with := ok(RenderChat(`{"messages": [`+user+`, `+asst+`]}`, false))
	if !strings.HasPrefix(with, before) {
		t.Fatal("prefix")
	}
	reply := with[len(before):]
	var result struct {
		ToolCalls []struct {
			Name      string            `json:"name"`
			Arguments map[string]string `json:"arguments"`
		} `json:"tool_calls"`
	}
	if err := json.Unmarshal([]byte(ok(ParseChat(reply, false))), &result); err != nil {
		t.Fatal(err)
	}
	if len(result.ToolCalls) != 1 || result.ToolCalls[0].Name != "get_datetime" || result.ToolCalls[0].Arguments["timezone"] != "Asia/Tokyo" {
		t.Fatalf("parsed: %+v", result)
	}
	p := ok(NewChatParser(false))
	defer p.Close()
	var events strings.Builder
	for i := 0; i < len(reply); i += 7 {
		end := i + 7
		if end > len(reply) {
			end = len(reply)
		}
		events.WriteString(ok(p.Push(reply[i:end])))
	}
	fin := ok(p.Finish())
	if !strings.Contains(events.String()+fin, `"type":"tool_call"`) || !strings.Contains(fin, `"get_datetime"`) {
		t.Fatalf("streamed: %s %s", events.String(), fin)
	}
	t.Logf("reply of %d bytes -> %+v", len(reply), result)
}

func TestMissingModel(t *testing.T) {
	dir := testData() + "/no-such-model"
	_, err := Open(dir, cpu())
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error, got %v", err)
	}
	t.Logf("error: %v", err)
	if e.Status != StatusIO || !strings.HasPrefix(err.Error(), "DSI_ERR_IO: ") || !strings.Contains(e.Message, dir) {
		t.Fatalf("status %s, message %q", e.StatusName(), e.Message)
	}
	_, err = LoadTokenizer(dir + "/tokenizer.json")
	if !errors.As(err, &e) || e.Status != StatusIO || !strings.Contains(e.Message, "tokenizer.json") {
		t.Fatalf("tokenizer: %v", err)
	}
	// Each error carries its own call's message, however goroutines move between threads.
	var wg sync.WaitGroup
	bad := make(chan string, 1)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				path := fmt.Sprintf("/nonexistent/g%d-%d/tokenizer.json", g, i)
				if _, err := LoadTokenizer(path); err == nil || !strings.Contains(err.Error(), path) {
					select {
					case bad <- fmt.Sprintf("%s: %v", path, err):
					default:
					}
				}
				runtime.Gosched()
			}
		}(g)
	}
	wg.Wait()
	select {
	case m := <-bad:
		t.Fatalf("message of another call: %s", m)
	default:
	}
}

func TestGC(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	for round := 0; round < 12; round++ {
		s := ok(Open(demoModel(), cpu()))
		c := ok(s.NewContext(256, nil))
		noErr(c.Eval(5, 6, 7))
		f := ok(c.Fork())
		p := DefaultSamplerParams()
		p.Seed = uint64(round)
		smp := ok(NewSampler(p))
		tok := ok(s.Tokenizer())
		own := ok(LoadTokenizer(demoModel() + "/tokenizer.json"))
		d := ok(tok.Detokenizer(true))
		d2 := ok(own.Detokenizer(false))
		cp := ok(NewChatParser(true))
		objs := []interface{ Close() error }{s, c, f, smp, tok, own, d, d2, cp}
		rnd.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
		keep := rnd.Intn(len(objs))
		closed := map[interface{ Close() error }]bool{}
		for _, o := range objs[:keep] {
			o.Close()
			closed[o] = true
		}
		if !closed[f] && !closed[smp] { // still usable whatever went first
			noErr(f.Eval(ok(smp.Sample(f))))
		}
		if !closed[d2] {
			ok(d2.Push(65))
		}
		runtime.GC()
	}
	for i := 0; i < 5; i++ {
		runtime.GC()
	}
	s := ok(Open(demoModel(), cpu()))
	defer s.Close()
	c := ok(s.NewContext(64, nil))
	defer c.Close()
	noErr(c.Eval(1, 2, 3))
	if c.Len() != 3 {
		t.Fatal("still works")
	}
	t.Log("12 rounds of objects closed / dropped in random order, finalized")
}

func rssKiB(t *testing.T) int64 {
	for _, line := range strings.Split(string(ok(os.ReadFile("/proc/self/status"))), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
			return kb
		}
	}
	return -1
}

func TestCycles(t *testing.T) {
	s := ok(Open(demoModel(), cpu()))
	defer s.Close()
	var warm int64
	for i := 0; i < 1000; i++ {
		c := ok(s.NewContext(128, nil))
		noErr(c.Eval(10, 20, 30, 40))
		ok(c.Logits(-1))
		c.Close()
		if i == 99 {
			debug.FreeOSMemory() // a GC that also returns free Go heap to the OS
			warm = rssKiB(t)
		}
	}
	debug.FreeOSMemory()
	end := rssKiB(t)
	t.Logf("RSS after 100 cycles %d KiB, after 1000 cycles %d KiB (%+d KiB)", warm, end, end-warm)
	fmt.Printf("RSS after 100 cycles %d KiB, after 1000 cycles %d KiB (%+d KiB)\n", warm, end, end-warm)
	if end-warm >= 8*1024 {
		t.Fatalf("resident memory grew by %d KiB", end-warm)
	}
}

func generate(t *testing.T, s *Session, prompt []int32, seed uint64) ([]int32, error) {
	c, err := s.NewContext(256, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	p := DefaultSamplerParams()
	p.Seed = seed
	smp, err := NewSampler(p)
	if err != nil {
		return nil, err
	}
	defer smp.Close()
	if err := c.Eval(prompt...); err != nil {
		return nil, err
	}
	return c.Generate(smp, 24, nil)
}

func TestGoroutines(t *testing.T) {
	s := ok(Open(demoModel(), cpu()))
	defer s.Close()
	tok := ok(s.Tokenizer())
	prompt := ok(tok.Tokenize("def fibonacci(n):", 0))
	want := ok(generate(t, s, prompt, 42))
	var wg sync.WaitGroup
	got := make([][]int32, 4)
	errs := make([]error, 4)
	for k := 0; k < 4; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			got[k], errs[k] = generate(t, s, prompt, 42)
		}(k)
	}
	wg.Wait()
	for k := range got {
		if errs[k] != nil || !reflect.DeepEqual(got[k], want) {
			t.Fatalf("goroutine %d: %v %v != %v", k, errs[k], got[k], want)
		}
	}
	t.Logf("4 goroutines generated the same %d ids", len(want))
}

func TestCallbacks(t *testing.T) {
	var mu sync.Mutex
	var progress []float32
	var logs []string
	o := cpu()
	o.Progress = func(f float32) bool { mu.Lock(); progress = append(progress, f); mu.Unlock(); return true }
	o.Log = func(level int, m string) { mu.Lock(); logs = append(logs, m); mu.Unlock() }
	o.LogLevel = LogInfo
	s := ok(Open(demoModel(), o))
	defer s.Close()
	if len(progress) == 0 || progress[len(progress)-1] != 1 || len(logs) == 0 {
		t.Fatalf("progress %v, %d log lines", progress, len(logs))
	}
	polls := 0
	c := ok(s.NewContext(128, func() bool { polls++; return polls > 2 }))
	defer c.Close()
	var e *Error
	if err := c.Eval(1, 2, 3); !errors.As(err, &e) || e.Status != StatusCancelled {
		t.Fatalf("not aborted: %v", err)
	}
	if c.Len() != 0 {
		t.Fatal("aborted eval changed the context")
	}
	noErr(c.SetAbort(nil))
	tok := ok(s.Tokenizer())
	noErr(c.Eval(ok(tok.Tokenize("import os\n", 0))...))
	smp := ok(NewSampler(SamplerParams{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1, PenaltyLastN: 64, Seed: 1}))
	defer smp.Close()
	var streamed strings.Builder
	ids := ok(c.Generate(smp, 16, func(id int32, text string) bool { streamed.WriteString(text); return true }))
	if whole := ok(tok.Detokenize(ids, true)); whole != streamed.String() {
		t.Fatalf("streamed %q != %q", streamed.String(), whole)
	}
	t.Logf("progress %d reports, %d log lines, streamed %q", len(progress), len(logs), streamed.String())
	cancel := cpu()
	cancel.Progress = func(float32) bool { return false }
	if _, err := Open(demoModel(), cancel); !errors.As(err, &e) || e.Status != StatusCancelled {
		t.Fatalf("load not cancelled: %v", err)
	}
	var global []string
	noErr(SetLogger(func(level int, m string) { mu.Lock(); global = append(global, m); mu.Unlock() }, LogError))
	LoadTokenizer("/nonexistent/tokenizer.json")
	noErr(SetLogger(nil, LogNone))
	if len(global) != 1 || !strings.Contains(global[0], "/nonexistent") {
		t.Fatalf("process-wide log: %q", global)
	}
}

func TestBatchState(t *testing.T) {
	s := ok(Open(demoModel(), cpu()))
	defer s.Close()
	ctx := func() *Context { return ok(s.NewContext(256, nil)) }
	a, b, r := ctx(), ctx(), ctx()
	defer a.Close()
	defer b.Close()
	defer r.Close()
	noErr(s.EvalBatch([]BatchItem{{Context: a, Ids: []int32{5, 6, 7, 8}}, {Context: b, Ids: []int32{9, 10}}}))
	noErr(r.Eval(9, 10))
	if !reflect.DeepEqual(ok(b.Logits(-1)), ok(r.Logits(-1))) {
		t.Fatal("batch logits differ from a single evaluation")
	}
	if st := ok(s.CacheStats()); st.NContexts != 3 || st.PagesInUse < 3 || st.PageTokens != 64 {
		t.Fatalf("cache stats %+v", st)
	}
	p := DefaultSamplerParams()
	p.Seed = 3
	smp := ok(NewSampler(p))
	defer smp.Close()
	state := ok(a.SaveState(smp))
	first := ok(a.Generate(smp, 8, nil))
	c := ctx()
	defer c.Close()
	p.Seed = 99
	smp2 := ok(NewSampler(p))
	defer smp2.Close()
	noErr(c.LoadState(state, smp2))
	if again := ok(c.Generate(smp2, 8, nil)); !reflect.DeepEqual(again, first) {
		t.Fatalf("restored state: %v != %v", again, first)
	}
	file := t.TempDir() + "/état-状態.state" // a UTF-8 path
	f := ok(a.Fork())
	defer f.Close()
	g := ctx()
	defer g.Close()
	noErr(f.SaveStateFile(file, nil))
	noErr(g.LoadStateFile(file, nil))
	if !reflect.DeepEqual(g.Tokens(), a.Tokens()) || !reflect.DeepEqual(ok(g.Logits(-1)), ok(a.Logits(-1))) {
		t.Fatal("state file")
	}
	t.Logf("batch of 2 equals single; state of %d bytes continues the same; fork saved to a file and loaded back", len(state))
}

// checkpointSizes is the elements of the tensors not named *scale_inv, and the bytes of all,
// over a checkpoint's safetensors files.
func checkpointSizes(t *testing.T, dir string) (elements, bytes int64) {
	files, err := filepath.Glob(dir + "/*.safetensors")
	if err != nil || len(files) == 0 {
		t.Fatalf("safetensors in %s: %v", dir, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(raw[:8])
		var header map[string]json.RawMessage
		if err := json.Unmarshal(raw[8:8+n], &header); err != nil {
			t.Fatal(err)
		}
		for name, v := range header {
			if name == "__metadata__" {
				continue
			}
			var info struct {
				Shape       []int64 `json:"shape"`
				DataOffsets []int64 `json:"data_offsets"`
			}
			if err := json.Unmarshal(v, &info); err != nil {
				t.Fatal(err)
			}
			count := int64(1)
			for _, d := range info.Shape {
				count *= d
			}
			if !strings.HasSuffix(name, "scale_inv") {
				elements += count
			}
			bytes += info.DataOffsets[1] - info.DataOffsets[0]
		}
	}
	return elements, bytes
}

// Model facts, token attributes and performance counters agree with the C API and config.json.
func TestIntrospection(t *testing.T) {
	raw, err := os.ReadFile(demoModel() + "/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var config struct {
		HiddenSize int64 `json:"hidden_size"`
	}
	if err := json.Unmarshal(raw, &config); err != nil || config.HiddenSize <= 0 {
		t.Fatalf("hidden_size in config.json: %v", err)
	}
	s, err := Open(demoModel(), cpu())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.ConfigValue("hidden_size"); err != nil || v != config.HiddenSize {
		t.Fatalf("hidden_size %d, %v", v, err)
	}
	vocab, _ := s.ConfigValue("vocab_size")
	if vocab != int64(s.NVocab()) {
		t.Fatalf("vocab_size %d", vocab)
	}
	var e *Error
	if _, err := s.ConfigValue("no_such_key"); !errors.As(err, &e) || e.Status != StatusInvalidArgument {
		t.Fatalf("unknown key: %v", err)
	}
	// The demo's forward pass uses every tensor of its checkpoint (no MTP layer, untied lm_head).
	if elements, bytes := checkpointSizes(t, demoModel()); s.NParams() != elements || s.WeightBytes() != bytes {
		t.Fatalf("n_params %d, weight bytes %d; checkpoint %d, %d", s.NParams(), s.WeightBytes(), elements, bytes)
	}
	bos, eos := int32(s.BosToken()), int32(s.EosToken())
	if s.TokenAttr(bos)&TokenAttrControl == 0 || s.TokenAttr(eos)&TokenAttrEOG == 0 {
		t.Fatalf("BOS attr %d, EOS attr %d", s.TokenAttr(bos), s.TokenAttr(eos))
	}
	tok, err := s.Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.Tokenize("hello", 0)
	if err != nil || len(ids) == 0 || s.TokenAttr(ids[0]) != TokenAttrNormal {
		t.Fatalf("normal token %v: %v", ids, err)
	}
	if tok.TokenAttr(bos) != TokenAttrControl || s.TokenAttr(-1) != TokenAttrNone || s.TokenAttr(int32(s.NVocab())) != TokenAttrNone {
		t.Fatal("tokenizer BOS / out of range attributes")
	}
	c, err := s.NewContext(64, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	smp, err := Greedy()
	if err != nil {
		t.Fatal(err)
	}
	defer smp.Close()
	if err := c.Eval(1, 2, 3, 4, 5); err != nil {
		t.Fatal(err)
	}
	if err := c.Eval(6); err != nil {
		t.Fatal(err)
	}
	if _, err := smp.Sample(c); err != nil {
		t.Fatal(err)
	}
	p := c.Perf()
	if p.PromptTokens != 5 || p.DecodeTokens != 1 || p.LoadMs <= 0 || p.PromptMs < 0 || p.DecodeMs < 0 {
		t.Fatalf("context perf %+v", p)
	}
	if err := c.ResetPerf(); err != nil {
		t.Fatal(err)
	}
	if q := c.Perf(); q.PromptTokens != 0 || q.DecodeTokens != 0 || q.LoadMs != p.LoadMs {
		t.Fatalf("after reset %+v", q)
	}
	sp := smp.Perf()
	if sp.Samples != 1 || sp.SampleMs < 0 {
		t.Fatalf("sampler perf %+v", sp)
	}
	if err := smp.ResetPerf(); err != nil || smp.Perf().Samples != 0 {
		t.Fatalf("sampler reset: %v", err)
	}
	t.Logf("n_params %d, %d bytes; perf %+v; sample %.3f ms", s.NParams(), s.WeightBytes(), p, sp.SampleMs)
}
