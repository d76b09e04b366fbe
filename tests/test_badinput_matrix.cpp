// labels: cpu badinput
// The bad-input matrix of issue 9: for each class of hostile input, several cases built
// from the shipped tiny checkpoint and tokenizer, each through the C API. Every case must
// return the documented status with a message naming the file, key, position or value,
// promptly: never a crash, a hang, runaway memory, DSI_ERR_INTERNAL or a silent DSI_OK.
#include <doctest/doctest.h>

#include "temp_model.h"

#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <cmath>
#include <cstring>
#include <limits>

using namespace badinput;
using nlohmann::json;

namespace {

const std::string kTokenizer = std::string(DSI_TEST_DATA_DIR) + "/tokenizer/bytelevel_bpe.json";

// CPU seconds of this process since construction (not wall time, which a loaded CI
// machine inflates): each case must finish well within the 10 s an outside probe
// allows, with room for the sanitizers' slowdown when CI runs this under ASan.
struct Stopwatch {
    std::clock_t start = std::clock();
    double seconds() const { return double(std::clock() - start) / CLOCKS_PER_SEC; }
};
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr double kPromptSeconds = 30.0;
#else
constexpr double kPromptSeconds = 10.0;
#endif

void expect_status(dsi_status got, dsi_status want, const std::vector<std::string> &needles) {
    const std::string msg = dsi_last_error();
    INFO("status " << std::string(dsi_status_name(got)) << ", message: " << msg);
    CHECK(got == want);
    CHECK(got != DSI_ERR_INTERNAL);
    for (const std::string &n : needles) CHECK_MESSAGE(has(msg, n), "missing '" << n << "'");
}

// Opens a model directory through the C API.
dsi_status open_dir(const std::string &dir, dsi_session **keep = nullptr, const dsi_session_params *params = nullptr) {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.n_threads = 1;
    dsi_session *s = nullptr;
    const dsi_status st = dsi_session_open(dir.c_str(), params ? params : &p, &s);
    if (keep)
        *keep = s;
    else
        dsi_session_free(s);
    return st;
}

// A config edit of the tiny FP8 model: opening must fail with `want` naming `needles`.
void config_case(const std::function<void(json &)> &edit, dsi_status want, const std::vector<std::string> &needles,
                 const char *source = "tiny-fp8") {
    TempModel m(source, nullptr, edit);
    Stopwatch w;
    expect_status(open_dir(m.dir), want, needles);
    CHECK(w.seconds() < kPromptSeconds);
}

// Evaluates a few tokens greedily on an open model; returns the eval status.
dsi_status eval_status(dsi_session *s, int n_tokens = 6) {
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 64;
    dsi_context *c = nullptr;
    REQUIRE(dsi_context_create(s, &cp, &c) == DSI_OK);
    std::vector<int32_t> ids;
    for (int i = 0; i < n_tokens; ++i) ids.push_back(3 + 7 * i);
    const dsi_status st = dsi_context_eval(c, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL);
    dsi_context_free(c);
    return st;
}

std::string nested(const std::string &open, const std::string &inner, const std::string &close, size_t depth) {
    std::string s;
    s.reserve(depth * (open.size() + close.size()) + inner.size());
    for (size_t i = 0; i < depth; ++i) s += open;
    s += inner;
    for (size_t i = 0; i < depth; ++i) s += close;
    return s;
}

std::string write_temp(const std::string &dir, const std::string &name, const std::string &text) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
}

json base_tokenizer() { return json::parse(std::ifstream(kTokenizer)); }

dsi_status load_tokenizer_text(const std::string &text, dsi_tokenizer **keep = nullptr) {
    char tmpl[] = "/tmp/dsinfer-tok-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string path = write_temp(dir, "tokenizer.json", text);
    dsi_tokenizer *t = nullptr;
    const dsi_status st = dsi_tokenizer_load(path.c_str(), &t);
    fs::remove_all(dir);
    if (keep)
        *keep = t;
    else
        dsi_tokenizer_free(t);
    return st;
}

}  // namespace

// ---- 1. config values out of range never reach arithmetic or allocation ----------------

TEST_CASE("config: values past what the engine can address are DSI_ERR_CONFIG naming the key") {
    const double huge = 1e12;
    config_case([&](json &c) { c["index_topk"] = int64_t(huge); }, DSI_ERR_CONFIG, {"'index_topk'", "config.json"});
    config_case([](json &c) { c["index_topk"] = 513; }, DSI_ERR_CONFIG, {"'index_topk'", "513"});
    config_case([](json &c) { c["num_hidden_layers"] = int64_t(1) << 40; }, DSI_ERR_CONFIG, {"'num_hidden_layers'"});
    config_case([](json &c) { c["num_hidden_layers"] = 1000000000; }, DSI_ERR_CONFIG, {"'num_hidden_layers'"});
    config_case([](json &c) { c["max_position_embeddings"] = int64_t(1) << 31; }, DSI_ERR_CONFIG,
                {"'max_position_embeddings'", "2147483648"});
    config_case([](json &c) { c["vocab_size"] = int64_t(1) << 40; }, DSI_ERR_CONFIG, {"'vocab_size'"});
    config_case([](json &c) { c["hidden_size"] = int64_t(1) << 33; }, DSI_ERR_CONFIG, {"'hidden_size'"});
    config_case([](json &c) { c["num_attention_heads"] = int64_t(1) << 30; }, DSI_ERR_CONFIG,
                {"'num_attention_heads'"});
    config_case([](json &c) { c["n_routed_experts"] = int64_t(1) << 32; }, DSI_ERR_CONFIG, {"'n_routed_experts'"});
    config_case([](json &c) { c["index_n_heads"] = int64_t(1) << 40; }, DSI_ERR_CONFIG, {"'index_n_heads'"});
}

TEST_CASE("config: rms_norm_eps must be a small positive float32") {
    for (double eps : {1e300, 2.0, 1e-300})
        config_case([&](json &c) { c["rms_norm_eps"] = eps; }, DSI_ERR_CONFIG, {"'rms_norm_eps'"});
}

TEST_CASE("config: more layers than the checkpoint holds names the first missing tensor") {
    config_case([](json &c) { c["num_hidden_layers"] = 4000; }, DSI_ERR_CHECKPOINT, {"model.layers.4."});
}

TEST_CASE("config: index_topk up to max_position_embeddings still evaluates (selection capped at n_ctx)") {
    TempModel m("tiny-fp8", nullptr, [](json &c) { c["index_topk"] = 512; });
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(open_dir(m.dir, &s) == DSI_OK, dsi_last_error());
    CHECK(eval_status(s) == DSI_OK);
    dsi_session_free(s);
}

// ---- 2. files that are not regular files ----------------------------------------------

TEST_CASE("files: a FIFO, a device or a directory in place of a file fails at once") {
    TempModel m("tiny-fp8", nullptr, nullptr);
    const std::string config = m.dir + "/config.json";
    const std::string saved = m.dir + "/config.saved";
    fs::rename(config, saved);

    REQUIRE(mkfifo(config.c_str(), 0600) == 0);
    Stopwatch w;
    expect_status(open_dir(m.dir), DSI_ERR_IO, {config, "not a regular file"});
    fs::remove(config);

    REQUIRE(symlink("/dev/zero", config.c_str()) == 0);
    expect_status(open_dir(m.dir), DSI_ERR_IO, {config, "not a regular file"});
    fs::remove(config);

    fs::create_directory(config);
    expect_status(open_dir(m.dir), DSI_ERR_IO, {config, "is a directory"});
    fs::remove(config);
    fs::rename(saved, config);

    // A shard named by an index that is a FIFO.
    const std::string shard = m.dir + "/model.safetensors";
    fs::rename(shard, m.dir + "/real.safetensors");
    REQUIRE(mkfifo(shard.c_str(), 0600) == 0);
    std::ofstream(m.dir + "/model.safetensors.index.json")
        << R"({"weight_map": {"model.embed_tokens.weight": "model.safetensors"}})";
    expect_status(open_dir(m.dir), DSI_ERR_IO, {shard, "not a regular file"});
    CHECK(w.seconds() < kPromptSeconds);
}

TEST_CASE("files: a tokenizer path that is a FIFO, a device or a directory fails at once") {
    char tmpl[] = "/tmp/dsinfer-files-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string fifo = dir + "/fifo.json";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    for (const std::string &path : {fifo, std::string("/dev/zero"), dir}) {
        dsi_tokenizer *t = nullptr;
        Stopwatch w;
        expect_status(dsi_tokenizer_load(path.c_str(), &t), DSI_ERR_IO, {path});
        CHECK(t == nullptr);
        CHECK(w.seconds() < kPromptSeconds);
    }
    TempModel m("tiny-fp8", nullptr, nullptr);
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.tokenizer_path = fifo.c_str();
    expect_status(open_dir(m.dir, nullptr, &p), DSI_ERR_IO, {fifo});
    fs::remove_all(dir);
}

// ---- 3. deep nesting is refused before any recursion ---------------------------------

TEST_CASE("nesting: chat JSON nested tens of thousands deep is DSI_ERR_PARSE") {
    const size_t depth = 50000;
    const std::string deep_array = nested("[", "1", "]", depth);
    const std::string deep_object = nested("{\"a\":", "1", "}", depth);
    const std::string user = R"({"role": "user", "content": "hi"})";
    const std::vector<std::string> conversations = {
        // tool arguments given as an object, and as a JSON string
        R"({"messages": [)" + user +
            R"(, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": )" +
            deep_array + "}}}]}]}",
        R"({"messages": [)" + user +
            R"(, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": ")" +
            nested("{\\\"a\\\":", "1", "}", depth) + "\"}}]}]}",
        // tools and response_format
        R"({"tools": [{"type": "function", "function": )" + deep_object + R"(}], "messages": [)" + user + "]}",
        R"({"messages": [{"role": "system", "content": "s", "response_format": )" + deep_object + "}, " + user + "]}",
    };
    for (const std::string &conv : conversations) {
        char *prompt = nullptr;
        Stopwatch w;
        expect_status(dsi_chat_render(conv.data(), conv.size(), 0, &prompt, nullptr), DSI_ERR_PARSE,
                      {"nested deeper than"});
        CHECK(prompt == nullptr);
        CHECK(w.seconds() < kPromptSeconds);
    }
}

TEST_CASE("nesting: a DSML parameter value nested deep is DSI_ERR_PARSE, whole and incremental") {
    const std::string reply = "Hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
                              "<｜DSML｜parameter name=\"x\" string=\"false\">" +
                              nested("[", "", "]", 100000) +
                              "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";
    char *json_out = nullptr;
    expect_status(dsi_chat_parse(reply.data(), reply.size(), 0, &json_out, nullptr), DSI_ERR_PARSE,
                  {"parameter \"x\"", "nested deeper than"});
    dsi_chat_parser *parser = nullptr;
    REQUIRE(dsi_chat_parser_create(0, &parser) == DSI_OK);
    dsi_status st = DSI_OK;
    for (size_t at = 0; at < reply.size() && st == DSI_OK; at += 4096) {
        char *events = nullptr;
        st = dsi_chat_parser_push(parser, reply.data() + at, std::min<size_t>(4096, reply.size() - at), &events);
        dsi_free(events);
    }
    if (st == DSI_OK) {
        char *events = nullptr, *result = nullptr;
        st = dsi_chat_parser_finish(parser, &events, &result);
        dsi_free(events);
        dsi_free(result);
    }
    expect_status(st, DSI_ERR_PARSE, {"nested deeper than"});
    dsi_chat_parser_free(parser);
}

TEST_CASE("nesting: tokenizer.json with deeply nested Sequences, config.json and a safetensors header") {
    for (const char *field : {"normalizer", "pre_tokenizer"}) {
        json tok = base_tokenizer();
        const std::string key = std::string(field) == "normalizer" ? "normalizers" : "pretokenizers";
        std::string text = tok.dump();
        const std::string chain =
            nested(R"({"type": "Sequence", ")" + key + R"(": [)", "", "]}", 10000);
        tok[field] = nullptr;
        text = tok.dump();
        const std::string marker = "\"" + std::string(field) + "\":null";
        REQUIRE(has(text, marker));
        text.replace(text.find(marker), marker.size(), "\"" + std::string(field) + "\":" + chain);
        Stopwatch w;
        expect_status(load_tokenizer_text(text), DSI_ERR_FORMAT, {"nested deeper than"});
        CHECK(w.seconds() < kPromptSeconds);
    }
    TempModel m("tiny-fp8", nullptr, nullptr);
    std::ofstream(m.dir + "/config.json") << "{\"a\": " << nested("[", "", "]", 100000) << "}";
    expect_status(open_dir(m.dir), DSI_ERR_FORMAT, {"config.json", "nested deeper than"});

    char tmpl[] = "/tmp/dsinfer-st-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string header = "{\"__metadata__\": " + nested("[", "", "]", 100000) + "}";
    std::string bytes(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(&bytes[0], &n, 8);
    write_temp(dir, "model.safetensors", bytes + header);
    std::ofstream(dir + "/config.json") << std::ifstream(kGolden + "/tiny-fp8/config.json").rdbuf();
    expect_status(open_dir(dir), DSI_ERR_FORMAT, {"model.safetensors", "nested deeper than"});
    fs::remove_all(dir);
}

// ---- 4. thread counts --------------------------------------------------------------

TEST_CASE("threads: n_threads beyond 1024 or negative is DSI_ERR_INVALID_ARGUMENT") {
    TempModel m("tiny-fp8", nullptr, nullptr);
    for (int32_t n : {16384, 65536, 1025, -1, std::numeric_limits<int32_t>::max()}) {
        dsi_session_params p = dsi_session_default_params();
        p.n_threads = n;
        expect_status(open_dir(m.dir, nullptr, &p), DSI_ERR_INVALID_ARGUMENT,
                      {"dsi_session_params.n_threads", std::to_string(n)});
    }
    dsi_session *s = nullptr;
    REQUIRE(open_dir(m.dir, &s) == DSI_OK);
    for (int32_t n : {16384, 65536, -5}) {
        dsi_context_params cp = dsi_context_default_params();
        cp.n_threads = n;
        dsi_context *c = nullptr;
        expect_status(dsi_context_create(s, &cp, &c), DSI_ERR_INVALID_ARGUMENT,
                      {"dsi_context_params.n_threads", std::to_string(n)});
        CHECK(c == nullptr);
    }
    dsi_session_free(s);
}

// ---- 5. quadratic time or memory ----------------------------------------------------

TEST_CASE("linear: a DSML reply with 100k parameters, whole and in pieces") {
    std::string reply = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n";
    const int n = 100000;
    for (int i = 0; i < n; ++i)
        reply += "<｜DSML｜parameter name=\"p" + std::to_string(i) + "\" string=\"false\">" + std::to_string(i) +
                 "</｜DSML｜parameter>\n";
    reply += "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
    Stopwatch w;
    char *out = nullptr;
    size_t len = 0;
    REQUIRE_MESSAGE(dsi_chat_parse(reply.data(), reply.size(), 0, &out, &len) == DSI_OK, dsi_last_error());
    const json parsed = json::parse(std::string(out, len));
    dsi_free(out);
    CHECK(parsed["tool_calls"][0]["arguments"].size() == size_t(n));
    CHECK(parsed["tool_calls"][0]["arguments"]["p99999"] == 99999);
    CHECK(w.seconds() < kPromptSeconds);

    // A duplicate parameter is still refused with its position.
    const std::string dup = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
                            "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n"
                            "<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n"
                            "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
    expect_status(dsi_chat_parse(dup.data(), dup.size(), 0, &out, nullptr), DSI_ERR_PARSE,
                  {"duplicate parameter \"a\"", "at byte"});
}

TEST_CASE("linear: chat render with 50k tool results, and objects past the member limit") {
    const int n = 50000;
    json conv = {{"messages", json::array()}};
    conv["messages"].push_back({{"role", "user"}, {"content", "go"}});
    json calls = json::array();
    for (int i = 0; i < n; ++i)
        calls.push_back({{"type", "function"}, {"function", {{"name", "f"}, {"arguments", "{}"}}}});
    conv["messages"].push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}});
    for (int i = 0; i < n; ++i) conv["messages"].push_back({{"role", "tool"}, {"content", std::to_string(i)}});
    const std::string text = conv.dump();
    Stopwatch w;
    char *prompt = nullptr;
    size_t len = 0;
    REQUIRE_MESSAGE(dsi_chat_render(text.data(), text.size(), 0, &prompt, &len) == DSI_OK, dsi_last_error());
    CHECK(has(std::string(prompt, len), "<result>49999</result>\n</function_results>"));
    dsi_free(prompt);
    CHECK(w.seconds() < kPromptSeconds);

    json args = json::object();
    for (int i = 0; i < 20000; ++i) args["k" + std::to_string(i)] = i;
    json big = {{"messages", {{{"role", "user"}, {"content", "go"}},
                              {{"role", "assistant"},
                               {"tool_calls", {{{"type", "function"},
                                                {"function", {{"name", "f"}, {"arguments", args.dump()}}}}}}}}}};
    const std::string big_text = big.dump();
    expect_status(dsi_chat_render(big_text.data(), big_text.size(), 0, &prompt, nullptr), DSI_ERR_PARSE,
                  {"tool_calls[0].function.arguments", "more than 10000 members"});
}

TEST_CASE("linear: a tokenizer with 100k added tokens loads and matches them") {
    json tok = base_tokenizer();
    for (int i = 0; i < 100000; ++i)
        tok["added_tokens"].push_back({{"id", 0}, {"content", "<tok" + std::to_string(i) + ">"}, {"special", true},
                                       {"normalized", false}});
    Stopwatch w;
    dsi_tokenizer *t = nullptr;
    REQUIRE_MESSAGE(load_tokenizer_text(tok.dump(), &t) == DSI_OK, dsi_last_error());
    CHECK(w.seconds() < kPromptSeconds);
    const std::string text = "a<tok99999>b<tok7>";
    int32_t ids[16];
    size_t n = 0;
    REQUIRE(dsi_tokenize(t, text.data(), text.size(), 1, ids, 16, &n) == DSI_OK);
    REQUIRE(n == 4);
    CHECK(ids[1] == dsi_tokenizer_token_id(t, "<tok99999>"));
    CHECK(ids[3] == dsi_tokenizer_token_id(t, "<tok7>"));
    dsi_tokenizer_free(t);
}

TEST_CASE("linear: a long added token against a long near-miss text (parse_special)") {
    json tok = base_tokenizer();
    const size_t len = 200000;
    tok["added_tokens"].push_back(
        {{"id", 0}, {"content", std::string(len, 'a') + "b"}, {"special", true}, {"normalized", false}});
    tok["added_tokens"].push_back({{"id", 0}, {"content", "aa"}, {"special", true}, {"normalized", false}});
    dsi_tokenizer *t = nullptr;
    REQUIRE_MESSAGE(load_tokenizer_text(tok.dump(), &t) == DSI_OK, dsi_last_error());
    const int32_t aa = dsi_tokenizer_token_id(t, "aa"), long_id = dsi_tokenizer_token_id(t, std::string(len, 'a').append("b").c_str());
    Stopwatch w;
    // Only "aa" matches (leftmost-longest), then the long token at the end.
    const std::string text = std::string(len, 'a') + "x" + std::string(len, 'a') + "b";
    std::vector<int32_t> ids(len + 8);
    size_t n = 0;
    REQUIRE(dsi_tokenize(t, text.data(), text.size(), 1, ids.data(), ids.size(), &n) == DSI_OK);
    CHECK(w.seconds() < kPromptSeconds);
    REQUIRE(n == len / 2 + 2);
    CHECK(ids[0] == aa);
    CHECK(ids[len / 2 - 1] == aa);
    CHECK(ids[len / 2 + 1] == long_id);
    dsi_tokenizer_free(t);
}

TEST_CASE("linear: sparse vocabulary ids are refused instead of allocating by id") {
    for (int64_t id : {int64_t(1000000000), int64_t(2147483646), int64_t(100000)}) {
        json tok = base_tokenizer();
        tok["model"]["vocab"]["zzzz"] = id;
        Stopwatch w;
        expect_status(load_tokenizer_text(tok.dump()), DSI_ERR_FORMAT,
                      {"tokenizer.json", std::to_string(id), "densely"});
        CHECK(w.seconds() < kPromptSeconds);
    }
}

TEST_CASE("linear: 10M consecutive spaces and newlines encode (no regex match limit on valid text)") {
    dsi_tokenizer *t = nullptr;
    REQUIRE(dsi_tokenizer_load(kTokenizer.c_str(), &t) == DSI_OK);
    for (const auto &[c, length] : {std::pair<char, size_t>{' ', 10000000}, std::pair<char, size_t>{'\n', 2000000}}) {
        const std::string text(length, c);
        size_t n = 0;
        Stopwatch w;
        const dsi_status st = dsi_tokenize(t, text.data(), text.size(), 0, nullptr, 0, &n);
        INFO(dsi_last_error());
        CHECK(st == DSI_ERR_BUFFER_TOO_SMALL);  // the size query succeeded
        CHECK(n > 0);
        CHECK(w.seconds() < kPromptSeconds);
    }
    dsi_tokenizer_free(t);
}

// ---- 6. silent wrong answers ---------------------------------------------------------

namespace {

std::vector<char> slurp(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void spill(const std::string &path, const std::vector<char> &bytes) {
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("silent: a safetensors file whose tensors do not cover the data section exactly") {
    TempModel m("tiny-fp8", nullptr, nullptr);
    const std::string path = m.dir + "/model.safetensors";
    const std::vector<char> good = slurp(path);
    uint64_t header_len = 0;
    std::memcpy(&header_len, good.data(), 8);
    {  // header length shortened into its own padding: every tensor would shift
        std::vector<char> bad = good;
        size_t end = 8 + header_len;
        while (bad[end - 1] == ' ') --end;  // the JSON ends before the padding
        const uint64_t shorter = end - 8;
        REQUIRE(shorter < header_len);
        std::memcpy(bad.data(), &shorter, 8);
        spill(path, bad);
        expect_status(open_dir(m.dir), DSI_ERR_FORMAT, {path, "data section"});
    }
    {  // trailing bytes after the last tensor
        std::vector<char> bad = good;
        bad.insert(bad.end(), 4, '\0');
        spill(path, bad);
        expect_status(open_dir(m.dir), DSI_ERR_FORMAT, {path, "cover"});
    }
    spill(path, good);
    CHECK(open_dir(m.dir) == DSI_OK);
}

TEST_CASE("silent: a config that describes less than the checkpoint holds is an error naming the tensor") {
    config_case([](json &c) { c["num_hidden_layers"] = 3; }, DSI_ERR_CHECKPOINT,
                {"model.layers.3.", "num_hidden_layers 3"});
    config_case([](json &c) { c["n_shared_experts"] = 0; }, DSI_ERR_CHECKPOINT, {"shared_experts", "not used"});
    config_case(
        [](json &c) {
            c["n_routed_experts"] = 8;
            c["num_experts_per_tok"] = 2;
        },
        DSI_ERR_CHECKPOINT, {"model.layers.1.mlp.gate.weight", "[8, 256]"});
    // The MTP layer after the main ones stays allowed (see test_model_badinput).
}

TEST_CASE("silent: NaN or inf in vectors is refused at load, in weights at eval naming the layer") {
    auto poison = [](Tensor &t, float value) {
        REQUIRE(t.dtype == "BF16");
        uint32_t bits;
        std::memcpy(&bits, &value, 4);
        const uint16_t half = static_cast<uint16_t>(bits >> 16);
        std::memcpy(t.bytes.data() + 2 * 5, &half, 2);
    };
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    for (const std::string &name :
         {std::string("model.layers.2.mlp.gate.e_score_correction_bias"), std::string("model.norm.weight"),
          std::string("model.layers.1.self_attn.indexer.k_norm.bias")}) {
        for (float v : {nan, inf}) {
            TempModel m("tiny-bf16", [&](Tensors &t) {
                // e_score_correction_bias is stored as F32 in the tiny checkpoint
                if (t[name].dtype == "F32") {
                    std::memcpy(t[name].bytes.data() + 4 * 5, &v, 4);
                } else {
                    poison(t[name], v);
                }
            }, nullptr);
            expect_status(open_dir(m.dir), DSI_ERR_CHECKPOINT, {name, "element 5"});
        }
    }
    TempModel m("tiny-bf16", [&](Tensors &t) { poison(t["model.layers.2.self_attn.o_proj.weight"], nan); }, nullptr);
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(open_dir(m.dir, &s) == DSI_OK, dsi_last_error());
    expect_status(eval_status(s), DSI_ERR_CHECKPOINT, {"layer 2", "non-finite"});
    dsi_session_free(s);
}

TEST_CASE("silent: the sampler never returns DSI_OK for a token it could not pick") {
    dsi_sampler_params p = dsi_sampler_default_params();
    p.temperature = 0.0f;
    p.repeat_penalty = 1e30f;
    p.penalty_last_n = -1;
    dsi_sampler *s = nullptr;
    REQUIRE(dsi_sampler_create(&p, &s) == DSI_OK);
    const float inf = std::numeric_limits<float>::infinity();
    {  // every unmasked token is in the history and penalised to -inf
        const float logits[4] = {-inf, -1e10f, -inf, -3e10f};
        const int32_t history[2] = {1, 3};
        int32_t tok = 77;
        expect_status(dsi_sampler_sample_logits(s, logits, 4, history, 2, &tok), DSI_ERR_INVALID_ARGUMENT,
                      {"-inf"});
    }
    dsi_sampler_free(s);
    p = dsi_sampler_default_params();
    p.frequency_penalty = -3e38f;
    p.penalty_last_n = -1;
    REQUIRE(dsi_sampler_create(&p, &s) == DSI_OK);
    {  // count * frequency_penalty overflows: the logit would turn +inf or NaN
        const float logits[3] = {0.5f, 1.0f, -inf};
        const int32_t history[4] = {0, 0, 2, 2};
        int32_t tok = 77;
        expect_status(dsi_sampler_sample_logits(s, logits, 3, history, 4, &tok), DSI_ERR_INVALID_ARGUMENT,
                      {"token 0"});
    }
    dsi_sampler_free(s);
}

// ---- 7. undefined behaviour seen by UBSan ------------------------------------------------

TEST_CASE("ub: enum fields out of range, NULL buffers of size 0, NUL inside json_len") {
    TempModel m("tiny-fp8", nullptr, nullptr);
    dsi_session_params p = dsi_session_default_params();
    int bad = 7;
    std::memcpy(&p.backend, &bad, sizeof bad);
    expect_status(open_dir(m.dir, nullptr, &p), DSI_ERR_INVALID_ARGUMENT, {"backend", "7"});
    p = dsi_session_default_params();
    bad = 99;
    std::memcpy(&p.log_level, &bad, sizeof bad);
    expect_status(open_dir(m.dir, nullptr, &p), DSI_ERR_INVALID_ARGUMENT, {"log_level", "99"});

    dsi_tokenizer *t = nullptr;
    REQUIRE(dsi_tokenizer_load(kTokenizer.c_str(), &t) == DSI_OK);
    size_t len = 99;
    CHECK(dsi_detokenize(t, nullptr, 0, 0, nullptr, 0, &len) == DSI_OK);
    CHECK(len == 0);
    dsi_tokenizer_free(t);

    const std::string conv = std::string(R"({"messages": [{"role": "user", "content": "hi"}]})") + '\0' + "garbage";
    char *prompt = nullptr;
    expect_status(dsi_chat_render(conv.data(), conv.size(), 0, &prompt, nullptr), DSI_ERR_PARSE, {"NUL byte", "byte 49"});
}
