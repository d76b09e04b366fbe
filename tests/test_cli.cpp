// labels: cpu badinput
// The dsinfer command-line tool, run as a user would run it: its exit status, stdout
// and stderr, and the files it writes.
#include "dsinfer.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace {

const std::string kBinary = DSI_BINARY_DIR "/samples/dsinfer";
const std::string kTiny = DSI_TEST_DATA_DIR "/golden/tiny-bf16";
const std::string kGolden = DSI_TEST_DATA_DIR "/golden/tiny-golden.safetensors";
const int kTinyVocab = 1024;

std::string slurp(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file(const std::string &path, const std::string &data) {
    std::ofstream out(path, std::ios::binary);
    out << data;
}

struct TempDir {
    std::string path;
    TempDir() {
        char name[] = "/tmp/dsinfer_test_cli_XXXXXX";
        REQUIRE(mkdtemp(name) != nullptr);
        path = name;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

struct Result {
    int status = -1;
    std::string out, err;
};

// Runs the CLI with `input` on stdin; stdout and stderr go through files, so that
// neither can fill a pipe and block the child.
Result run(const std::vector<std::string> &args, const std::string &input = "") {
    TempDir dir;
    const std::string in = dir.path + "/stdin", out = dir.path + "/stdout", err = dir.path + "/stderr";
    write_file(in, input);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char *> argv = {const_cast<char *>(kBinary.c_str())};
    for (const std::string &a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int spawned = posix_spawn(&pid, kBinary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE_MESSAGE(spawned == 0, "cannot run " << kBinary << ": " << std::strerror(spawned));
    int wstatus = 0;
    REQUIRE(waitpid(pid, &wstatus, 0) == pid);
    REQUIRE_MESSAGE(WIFEXITED(wstatus), "dsinfer died with signal " << WTERMSIG(wstatus));
    Result r;
    r.status = WEXITSTATUS(wstatus);
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

// Whitespace-separated integers; fails the test on anything else.
std::vector<int32_t> ints_of(const std::string &text) {
    std::istringstream in(text);
    std::vector<int32_t> v;
    std::string word;
    while (in >> word) {
        INFO("word: " << word);
        REQUIRE(word.find_first_not_of("0123456789") == std::string::npos);
        v.push_back(static_cast<int32_t>(std::stol(word)));
    }
    return v;
}

std::string join(const std::vector<int32_t> &ids, const char *sep) {
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? sep : "") + std::to_string(ids[i]);
    return s;
}

// One tensor of a safetensors file (little-endian host assumed, as the file's data is
// little-endian).
template <class T>
std::vector<T> tensor_of(const std::string &path, const std::string &name) {
    const std::string file = slurp(path);
    REQUIRE(file.size() > 8);
    uint64_t header_len = 0;
    std::memcpy(&header_len, file.data(), 8);
    const nlohmann::json header = nlohmann::json::parse(file.substr(8, header_len));
    REQUIRE(header.contains(name));
    const size_t begin = header[name]["data_offsets"][0], end = header[name]["data_offsets"][1];
    std::vector<T> v((end - begin) / sizeof(T));
    std::memcpy(v.data(), file.data() + 8 + header_len + begin, end - begin);
    return v;
}

template <class T>
std::vector<T> golden(const std::string &name) {
    return tensor_of<T>(kGolden, name);
}

struct Npy {
    std::string header;
    size_t data_offset = 0;
    std::vector<float> data;
};

// Checks the .npy v1.0 framing and returns the header dict and the float32 payload.
Npy read_npy(const std::string &path) {
    const std::string bytes = slurp(path);
    REQUIRE(bytes.size() >= 10);
    CHECK(bytes.compare(0, 6, "\x93NUMPY") == 0);
    CHECK(bytes[6] == 1);
    CHECK(bytes[7] == 0);
    const size_t header_len = static_cast<unsigned char>(bytes[8]) | static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8;
    Npy npy;
    npy.data_offset = 10 + header_len;
    REQUIRE(bytes.size() >= npy.data_offset);
    npy.header = bytes.substr(10, header_len);
    CHECK(npy.data_offset % 64 == 0);
    CHECK(npy.header.back() == '\n');
    npy.data.resize((bytes.size() - npy.data_offset) / 4);
    CHECK((bytes.size() - npy.data_offset) % 4 == 0);
    std::memcpy(npy.data.data(), bytes.data() + npy.data_offset, npy.data.size() * 4);
    return npy;
}

// The DeepSeek-V3 tokenizer.json where test_tokenizer finds it (scripts/fetch_tokenizer.sh).
std::string tokenizer_path() {
    const char *env = std::getenv("DSI_DEEPSEEK_TOKENIZER");
    return env && *env ? env : DSI_BINARY_DIR "/data/deepseek_v3_tokenizer.json";
}

// The byte -> character table of the ByteLevel pre-tokenizer (GPT-2's bytes_to_unicode).
std::string byte_symbol(int b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = b;
    if (!printable) {
        cp = 256;
        for (int c = 0; c < b; ++c)
            if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) ++cp;
    }
    std::string utf8;
    if (cp < 0x80) {
        utf8 += static_cast<char>(cp);
    } else {
        utf8 += static_cast<char>(0xC0 | (cp >> 6));
        utf8 += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return utf8;
}

// A byte-level BPE tokenizer.json with exactly the tiny model's 1024 ids (the chat's
// special tokens, the 256 byte symbols, filler words), so that the text modes run end
// to end on the tiny checkpoint, which ships no tokenizer.
std::string write_tiny_tokenizer(const std::string &dir) {
    const char *const specials[] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                                    "<｜Assistant｜>", "<think>", "</think>"};
    nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array();
    for (int id = 0; id < 16; ++id) {
        const std::string text = id < 6 ? specials[id] : "<｜reserved_" + std::to_string(id) + "｜>";
        vocab[text] = id;
        added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", true}});
    }
    for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = 16 + b;
    for (int id = 16 + 256; id < kTinyVocab; ++id)
        vocab["\xC4\xA0" + std::string{static_cast<char>('a' + id % 26), static_cast<char>('a' + id / 26 % 26)}] = id;
    const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                       {"use_regex", true}};
    const nlohmann::json tok = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr},
                                {"pre_tokenizer", byte_level}, {"post_processor", nullptr}, {"decoder", byte_level},
                                {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
    const std::string path = dir + "/tokenizer.json";
    write_file(path, tok.dump());
    return path;
}

// dsi_detokenize() through the library itself, to check the CLI's streamed text.
std::string detokenize(const std::string &tokenizer, const std::vector<int32_t> &ids) {
    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load(tokenizer.c_str(), &tok) == DSI_OK);
    size_t len = 0;
    std::string text(4096, '\0');
    const dsi_status st = dsi_detokenize(tok, ids.data(), ids.size(), 0, &text[0], text.size(), &len);
    dsi_tokenizer_free(tok);
    REQUIRE(st == DSI_OK);
    text.resize(len);
    return text;
}

const char *const kSubcommands[] = {"generate", "logits", "tokenize", "render-chat", "chat", "bench", "serve"};

}  // namespace

TEST_CASE("the CLI has been built") {
    REQUIRE_MESSAGE(access(kBinary.c_str(), X_OK) == 0, kBinary << " is missing: build the dsinfer_cli target");
}

TEST_CASE("--help lists the subcommands in a few lines; COMMAND --help every flag") {
    const Result r = run({"--help"});
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    for (const char *sub : kSubcommands) CHECK_MESSAGE(contains(r.out, sub), sub);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') <= 15);

    std::string all;
    for (const char *sub : kSubcommands) {
        const Result s = run({sub, "--help"});
        CAPTURE(sub);
        CHECK(s.status == 0);
        CHECK(contains(s.out, std::string("usage: dsinfer ") + sub));
        all += s.out;
    }
    for (const char *flag : {"--model", "--ids", "--ids-file", "--prompt", "--file", "--tokenizer", "--raw-prompt",
                             "--max-tokens", "--greedy", "--temp", "--top-k", "--top-p", "--min-p", "--seed",
                             "--repeat-penalty", "--frequency-penalty", "--presence-penalty", "--penalty-last-n",
                             "--backend", "--threads", "--n-ctx", "--stop-at-eos", "--ignore-eos", "--no-echo", "--out",
                             "--text", "--text-file", "--no-special", "--input", "--thinking", "--system", "--stats",
                             "--verbose", "--prompt-tokens", "--decode-tokens", "--host", "--port", "--parallel",
                             "--queue", "--ctx", "--api-key", "--model-name", "--max-body", "--timeout"})
        CHECK_MESSAGE(contains(all, flag), flag);
    for (const char *short_flag : {"-m, --model", "-p, --prompt", "-f, --file", "-n, --max-tokens", "-t, --threads",
                                   "-s, --seed", "-c, --n-ctx"})
        CHECK_MESSAGE(contains(all, short_flag), short_flag);
}

TEST_CASE("serve: command-line mistakes are usage errors, before anything listens") {
    CHECK(run({"serve"}).status == 2);
    const Result port = run({"serve", "--model", kTiny, "--port", "70000"});
    CHECK(port.status == 2);
    CHECK(contains(port.err, "--port"));
    const Result parallel = run({"serve", "--model", kTiny, "--parallel", "0"});
    CHECK(parallel.status == 2);
    CHECK(contains(parallel.err, "--parallel"));
}

TEST_CASE("a misspelt subcommand or flag gets 'did you mean'") {
    const Result cmd = run({"generat"});
    CHECK(cmd.status == 2);
    CHECK(contains(cmd.err, "did you mean 'generate'?"));
    const Result flag = run({"generate", "--modle", kTiny});
    CHECK(flag.status == 2);
    CHECK(contains(flag.err, "did you mean '--model'?"));
    const Result far = run({"generate", "--zzzzzzzz"});
    CHECK(far.status == 2);
    CHECK(!contains(far.err, "did you mean"));
}

TEST_CASE("short flags do what the long ones do; --max-tokens raises n_ctx; bench") {
    const Result lng = run({"generate", "--model", kTiny, "--ids", "1,2,3", "--seed", "7", "--max-tokens", "5",
                            "--threads", "1"});
    const Result shrt = run({"generate", "-m", kTiny, "--ids", "1,2,3", "-s", "7", "-n", "5", "-t", "1"});
    INFO(lng.err);
    CHECK(lng.status == 0);
    CHECK(shrt.out == lng.out);
    // The tiny model has 512 positions: prompt + max-tokens beyond that is capped there.
    const Result capped = run({"generate", "-m", kTiny, "--ids", "1,2,3", "--greedy", "-n", "600"});
    INFO(capped.err);
    CHECK(capped.status == 0);
    CHECK(ints_of(capped.out).size() == 509);
    CHECK(contains(capped.err, "--n-ctx"));

    const Result bench = run({"bench", "-m", kTiny, "-t", "1", "--prompt-tokens", "20", "--decode-tokens", "4"});
    INFO(bench.err);
    CHECK(bench.status == 0);
    CHECK(bench.out.rfind("| " + std::string(kTiny) + " | 1 | 20 | ", 0) == 0);
    CHECK(contains(bench.out, " | 4 | "));
}

TEST_CASE("bad command lines exit 2 with a message on stderr only") {
    const std::vector<std::vector<std::string>> cases = {
        {},
        {"frobnicate"},
        {"generate", "--bogus"},
        {"generate", "--ids", "1"},
        {"generate", "--model", kTiny},
        {"generate", "--model", kTiny, "--ids", "1", "--prompt", "hi"},
        {"generate", "--model", kTiny, "--ids", "1", "--max-tokens"},
        {"generate", "--model", kTiny, "--ids", "1", "--max-tokens", "12x"},
        {"generate", "--model", kTiny, "--ids", "1", "--max-tokens", "-1"},
        {"generate", "--model", kTiny, "--ids", "1", "--max-tokens", "99999999999"},
        {"generate", "--model", kTiny, "--ids", "1,a"},
        {"generate", "--model", kTiny, "--ids", ","},
        {"generate", "--model", kTiny, "--ids", "1", "--greedy", "--temp", "1"},
        {"generate", "--model", kTiny, "--ids", "1", "--temp", "nan"},
        {"generate", "--model", kTiny, "--ids", "1", "--top-p", "1.5"},
        {"generate", "--model", kTiny, "--ids", "1", "--repeat-penalty", "0"},
        {"generate", "--model", kTiny, "--ids", "1", "--seed", "-1"},
        {"generate", "--model", kTiny, "--ids", "1", "--backend", "tpu"},
        {"generate", "--model", kTiny, "--ids", "1", "--threads", " 2"},
        {"generate", "--model", kTiny, "--ids", "1", "--greedy=yes"},
        {"generate", "--model", kTiny, "--ids", "1", "--max-tokens", "2", "--max-tokens", "3"},
        {"generate", "--model", kTiny, "--ids", "1", "stray"},
        {"logits", "--model", kTiny, "--ids", "1"},
        {"logits", "--model", kTiny, "--out", "x.npy"},
        {"tokenize", "--tokenizer", "tokenizer.json"},
        {"render-chat"},
        {"chat"},
    };
    for (const auto &args : cases) {
        std::string line;
        for (const std::string &a : args) line += a + " ";
        CAPTURE(line);
        const Result r = run(args);
        CHECK(r.status == 2);
        CHECK(r.out.empty());
        CHECK(contains(r.err, "dsinfer"));
    }
}

TEST_CASE("a missing model directory is a library error that names the path") {
    const std::string dir = "/nonexistent/dsinfer-model-dir";
    const Result r = run({"generate", "--model", dir, "--ids", "1,2,3", "--max-tokens", "4"});
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("dsinfer: error: ", 0) == 0);
    CHECK(!contains(r.err, "DSI_"));  // messages name files and flags, not C enums
    CHECK(contains(r.err, dir));
}

TEST_CASE("logits writes a float32 (tokens, vocab) .npy that matches the reference") {
    TempDir dir;
    const std::string path = dir.path + "/logits.npy";
    const Result r = run({"logits", "--model", kTiny, "--ids", "1,2,3", "--out", path, "--backend", "cpu"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.empty());
    const Npy npy = read_npy(path);
    CHECK(contains(npy.header, "'descr': '<f4'"));
    CHECK(contains(npy.header, "'fortran_order': False"));
    CHECK(contains(npy.header, "'shape': (3, 1024)"));
    REQUIRE(npy.data.size() == 3u * kTinyVocab);
    for (float v : npy.data) REQUIRE(std::isfinite(v));

    SUBCASE("--ids-file takes commas and whitespace and gives the same bytes") {
        const std::string ids = dir.path + "/ids.txt", again = dir.path + "/again.npy";
        write_file(ids, "1, 2\n3\n");
        const Result f = run({"logits", "--model", kTiny, "--ids-file", ids, "--out", again, "--threads", "2"});
        CHECK(f.status == 0);
        CHECK(slurp(again) == slurp(path));
    }

    SUBCASE("rows are positions: the golden prefill logits (tolerance of tests/data/golden/README.md)") {
        const std::vector<int32_t> input = golden<int32_t>("case0.input_ids");
        const std::vector<float> expected = golden<float>("case0.logits");
        const std::string out = dir.path + "/case0.npy";
        const Result g = run({"logits", "--model", kTiny, "--ids", join(input, ","), "--out", out});
        REQUIRE(g.status == 0);
        const Npy got = read_npy(out);
        CHECK(contains(got.header, "'shape': (" + std::to_string(input.size()) + ", 1024)"));
        REQUIRE(got.data.size() == expected.size());
        double max_diff = 0;
        for (size_t i = 0; i < expected.size(); ++i)
            max_diff = std::max(max_diff, static_cast<double>(std::fabs(got.data[i] - expected[i])));
        CHECK(max_diff <= 2e-3);
    }
}

TEST_CASE("generate --greedy prints exactly the requested ids") {
    const Result r = run({"generate", "--model", kTiny, "--ids", "1,2,3", "--greedy", "--max-tokens", "4"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    REQUIRE(!r.out.empty());
    CHECK(r.out.back() == '\n');
    CHECK(r.out.find('\n') == r.out.size() - 1);
    const std::vector<int32_t> ids = ints_of(r.out);
    CHECK(ids.size() == 4);
    for (int32_t id : ids) CHECK(id < kTinyVocab);
    CHECK(run({"generate", "--model", kTiny, "--ids", "1 2 3", "--greedy", "--max-tokens", "4"}).out == r.out);

    SUBCASE("it continues the golden prompt exactly as the reference does") {
        const std::vector<int32_t> input = golden<int32_t>("case0.input_ids");
        const std::vector<int32_t> expected = golden<int32_t>("case0.greedy_ids");
        const Result g = run({"generate", "--model", kTiny, "--ids", join(input, ","), "--greedy", "--max-tokens",
                              std::to_string(expected.size())});
        REQUIRE(g.status == 0);
        CHECK(g.out == join(expected, " ") + "\n");
    }

    SUBCASE("sampling with a seed is reproducible, and --stats and --verbose leave stdout alone") {
        const std::vector<std::string> args = {"generate", "--model", kTiny, "--ids", "1,2,3", "--max-tokens", "6",
                                               "--temp", "1.5", "--top-k", "50", "--top-p", "0.9", "--min-p", "0.01",
                                               "--repeat-penalty", "1.1", "--frequency-penalty", "0.1",
                                               "--presence-penalty", "0.1", "--penalty-last-n", "8", "--seed", "7"};
        const Result a = run(args);
        REQUIRE(a.status == 0);
        CHECK(ints_of(a.out).size() == 6);
        std::vector<std::string> with_stats = args;
        with_stats.insert(with_stats.end(), {"--stats", "--verbose"});
        const Result b = run(with_stats);
        CHECK(b.status == 0);
        CHECK(b.out == a.out);
        for (const char *word : {"load", "prefill", "decode", "tokens/s", "peak RSS"}) CHECK(contains(b.err, word));
    }

    SUBCASE("--max-tokens 0 prints an empty line") {
        const Result z = run({"generate", "--model", kTiny, "--ids", "1", "--max-tokens", "0"});
        CHECK(z.status == 0);
        CHECK(z.out == "\n");
    }
}

TEST_CASE("an out-of-range token id is refused, naming it") {
    const Result r = run({"generate", "--model", kTiny, "--ids", "1,5000", "--greedy", "--max-tokens", "4"});
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(contains(r.err, "token id 5000 at position 1 is outside the vocabulary"));

    TempDir dir;
    const std::string path = dir.path + "/never.npy";
    const Result l = run({"logits", "--model", kTiny, "--ids", "5000", "--out", path});
    CHECK(l.status == 1);
    CHECK(contains(l.err, "outside the vocabulary"));
    CHECK(!std::filesystem::exists(path));
}

TEST_CASE("text modes need a tokenizer, and say so") {
    // The tiny checkpoint ships no tokenizer.json.
    const Result g = run({"generate", "--model", kTiny, "--prompt", "hello", "--max-tokens", "2"});
    CHECK(g.status == 1);
    CHECK(g.out.empty());
    CHECK(contains(g.err, "tokenizer"));
    const Result c = run({"chat", "--model", kTiny}, "hello\n");
    CHECK(c.status == 1);
    CHECK(contains(c.err, "tokenizer"));
}

TEST_CASE("generate --prompt streams the text of what --ids generates") {
    TempDir dir;
    const std::string tokenizer = write_tiny_tokenizer(dir.path);
    const Result t = run({"tokenize", "--tokenizer", tokenizer, "--text", "Hello there"});
    INFO(t.err);
    REQUIRE(t.status == 0);
    const std::vector<int32_t> text_ids = ints_of(t.out);
    std::vector<int32_t> prompt = {0};  // the model's BOS, which --prompt prepends
    prompt.insert(prompt.end(), text_ids.begin(), text_ids.end());

    const Result ids = run({"generate", "--model", kTiny, "--ids", join(prompt, ","), "--greedy", "--max-tokens",
                            "6", "--stop-at-eos"});
    REQUIRE(ids.status == 0);
    std::vector<int32_t> generated = ints_of(ids.out);
    if (!generated.empty() && generated.back() == 1) generated.pop_back();  // EOS has no text

    const Result text = run({"generate", "--model", kTiny, "--tokenizer", tokenizer, "--prompt", "Hello there",
                             "--greedy", "--max-tokens", "6"});
    INFO(text.err);
    CHECK(text.status == 0);
    // The prompt is echoed, the output ends with a newline.
    CHECK(text.out == "Hello there" + detokenize(tokenizer, generated) + "\n");
    const Result quiet = run({"generate", "--model", kTiny, "--tokenizer", tokenizer, "--prompt", "Hello there",
                              "--greedy", "--max-tokens", "6", "--no-echo"});
    CHECK(quiet.out == detokenize(tokenizer, generated) + "\n");
    TempDir pdir;
    write_file(pdir.path + "/prompt.txt", "Hello there");
    const Result from_file = run({"generate", "-m", kTiny, "--tokenizer", tokenizer, "-f", pdir.path + "/prompt.txt",
                                  "--greedy", "-n", "6"});
    CHECK(from_file.out == text.out);

    SUBCASE("--raw-prompt leaves out the BOS token") {
        const Result raw_ids = run({"generate", "--model", kTiny, "--ids", join(text_ids, ","), "--greedy",
                                    "--max-tokens", "3", "--stop-at-eos"});
        std::vector<int32_t> raw = ints_of(raw_ids.out);
        if (!raw.empty() && raw.back() == 1) raw.pop_back();
        const Result raw_text = run({"generate", "--model", kTiny, "--tokenizer", tokenizer, "--prompt",
                                     "Hello there", "--raw-prompt", "--greedy", "--max-tokens", "3"});
        CHECK(raw_text.status == 0);
        CHECK(raw_text.out == "Hello there" + detokenize(tokenizer, raw) + "\n");
    }
}

TEST_CASE("chat answers each line and ends at /exit or EOF") {
    TempDir dir;
    const std::string tokenizer = write_tiny_tokenizer(dir.path);
    const std::vector<std::string> args = {"chat", "--model", kTiny, "--tokenizer", tokenizer, "--max-tokens", "3",
                                           "--greedy"};
    const Result r = run(args, "hello\n\nhow are you\n/exit\nnever read\n");
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK(!r.out.empty());
    CHECK(r.out.back() == '\n');  // each reply ends its line
    CHECK(!contains(r.err, "error"));

    std::vector<std::string> thinking = args;
    thinking.push_back("--thinking");
    const Result t = run(thinking, "hello\nagain");  // EOF without a final newline
    INFO(t.err);
    CHECK(t.status == 0);
    CHECK(!t.out.empty());
    CHECK(!contains(t.err, "error"));
}

TEST_CASE("render-chat reproduces DeepSeek's encoder byte for byte") {
    const std::string input = DSI_TEST_DATA_DIR "/golden/chat/dsv32-tools-input.json";
    const Result r = run({"render-chat", "--input", input, "--thinking"});
    INFO(r.err);
    CHECK(r.status == 0);
    std::string expected = slurp(DSI_TEST_DATA_DIR "/golden/chat/dsv32-tools-output.txt");
    // DeepSeek's test compares with f.read().strip(): the file's last newline is not prompt.
    while (!expected.empty() && expected.back() == '\n') expected.pop_back();
    CHECK(r.out == expected);

    const Result missing = run({"render-chat", "--input", "/nonexistent/conversation.json"});
    CHECK(missing.status == 1);
    CHECK(contains(missing.err, "/nonexistent/conversation.json"));
}

TEST_CASE("logits of every reference sweep case match transformers float64 (tests/data/sweep)") {
    std::ifstream in(DSI_TEST_DATA_DIR "/sweep/cases.json");
    REQUIRE(in.good());
    const nlohmann::json manifest = nlohmann::json::parse(in);
    REQUIRE(manifest["cases"].size() >= 24);
    TempDir dir;
    for (const auto &c : manifest["cases"]) {
        const std::string name = c["name"], model = DSI_TEST_DATA_DIR "/sweep/" + name;
        const std::string ref = model + "/reference.safetensors", out = dir.path + "/" + name + ".npy";
        const std::vector<int32_t> input = tensor_of<int32_t>(ref, "long.input_ids");
        const std::vector<float> expected = tensor_of<float>(ref, "long.logits");
        const Result r = run({"logits", "--model", model, "--ids", join(input, ","), "--out", out});
        INFO(name << ": " << r.err);
        CHECK(r.status == 0);
        const Npy got = read_npy(out);
        const size_t vocab = expected.size() / input.size();
        CHECK(contains(got.header, "'shape': (" + std::to_string(input.size()) + ", " + std::to_string(vocab) + ")"));
        REQUIRE(got.data.size() == expected.size());
        double max_diff = 0;
        for (size_t i = 0; i < expected.size(); ++i)
            max_diff = std::max(max_diff, static_cast<double>(std::fabs(got.data[i] - expected[i])));
        CHECK(max_diff <= 2e-3);  // tests/data/golden/README.md
    }
}

TEST_CASE("tokenize prints the ids of the DeepSeek-V3 tokenizer") {
    const std::string tokenizer = tokenizer_path();
    REQUIRE_MESSAGE(std::filesystem::exists(tokenizer),
                    "DeepSeek-V3 tokenizer.json not found at " << tokenizer << ": run scripts/fetch_tokenizer.sh "
                    << DSI_BINARY_DIR "/data (or point DSI_DEEPSEEK_TOKENIZER at the file)");
    const Result r = run({"tokenize", "--tokenizer", tokenizer, "--text", "Hello, world!"});
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK(r.out == "19923 14 2058 3\n");  // tests/data/golden/tokenizer-cases.json

    TempDir dir;
    const std::string text = dir.path + "/text.txt";
    write_file(text, "<｜begin▁of▁sentence｜>Hello world");
    const Result special = run({"tokenize", "--tokenizer", tokenizer, "--text-file", text});
    CHECK(special.status == 0);
    CHECK(special.out == "0 19923 2058\n");
    const Result plain = run({"tokenize", "--tokenizer", tokenizer, "--text-file", text, "--no-special"});
    CHECK(plain.status == 0);
    CHECK(ints_of(plain.out).size() > 3);
}
