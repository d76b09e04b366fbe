// labels: tokenizer cpu
// The tokenizer against Hugging Face `tokenizers`: the golden DeepSeek-V3 cases, edge cases
// checked against ids produced by `tokenizers` 0.23, small fixtures that need no download,
// the streaming detokenizer and the C API.
#include <doctest/doctest.h>

#include "common/error.h"
#include "dsinfer.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Ids = std::vector<int32_t>;

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open " << path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string deepseek_path() {
    const char *env = std::getenv("DSI_DEEPSEEK_TOKENIZER");
    return env && *env ? env : DSI_BINARY_DIR "/data/deepseek_v3_tokenizer.json";
}

// The DeepSeek-V3 tokenizer.json, loaded once per process. Missing is a failure, not a skip.
const dsi::Tokenizer &deepseek() {
    static std::unique_ptr<dsi::Tokenizer> tok;
    if (!tok) {
        std::string path = deepseek_path();
        if (!std::ifstream(path).good())
            FAIL("DeepSeek-V3 tokenizer.json not found at " << path << ": run scripts/fetch_tokenizer.sh "
                 << DSI_BINARY_DIR "/data (or point DSI_DEEPSEEK_TOKENIZER at the file)");
        tok = dsi::Tokenizer::load_file(path);
    }
    return *tok;
}

std::shared_ptr<const dsi::Tokenizer> fixture(const std::string &name) {
    return dsi::Tokenizer::load_file(DSI_TEST_DATA_DIR "/tokenizer/" + name);
}

// FNV-1a over the ids, to compare long outputs with values computed by `tokenizers`.
uint64_t ids_hash(const Ids &ids) {
    uint64_t h = 14695981039346656037ull;
    for (int32_t id : ids) h = (h ^ static_cast<uint64_t>(id)) * 1099511628211ull;
    return h;
}

std::string decode(const dsi::Tokenizer &tok, const Ids &ids) { return tok.decode(ids.data(), ids.size()); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// About `bytes` of mixed text (English, code, CJK, emoji, odd whitespace, digits and the
// special-token spellings), from a fixed-seed generator so that the expected ids stay valid.
std::string mixed_text(size_t bytes) {
    static const char *const pieces[] = {
        "The quick brown fox jumps over the lazy dog. ",
        "It's a dog's life; isn't it? They'll've done it.\n",
        "def f(x):\n    return [i * 2 for i in range(x) if i % 3 == 0]\n",
        "int main(int argc, char **argv) { std::vector<int> v{1, 2, 3}; return v[0]; }\n",
        "深度求索稀疏注意力机制", "明天杭州和北京的天气怎么样？", "今日は良い天気ですね。カタカナ",
        "한국어 텍스트 ", "Привет, мир! ", "مرحبا بالعالم ", "नमस्ते दुनिया ",
        "😀🎉👍🏽", "🇨🇳🇺🇸", "👨\u200d👩\u200d👧", "∑∫√∞ ≤ ≥ ≠ ≈ π ",
        "   \n\t\t  ", "\r\n", "\u00a0", "\u3000", " ", "  ", "\n\n\n",
        "1234567890", "3.14159 ", "2024-01-15 ",
        "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜User", "<think>",
    };
    const size_t n_pieces = sizeof pieces / sizeof pieces[0];
    static const char *const syllables[] = {"ka", "lo", "mi", "zen", "tor", "qua", "ix", "bel", "dra", "fin"};
    std::string text;
    uint32_t state = 20240607;
    auto next = [&] { return (state = state * 1664525u + 1013904223u) >> 8; };
    while (text.size() < bytes) {
        uint32_t r = next() % (n_pieces + 4);
        if (r < n_pieces) {
            text += pieces[r];
        } else {  // a made-up word, so that not every piece repeats
            if (r % 2) text += ' ';
            for (uint32_t k = 2 + next() % 3; k > 0; --k) text += syllables[next() % 10];
        }
    }
    return text;
}

}  // namespace

// ---- DeepSeek-V3 (downloaded by scripts/fetch_tokenizer.sh) ---------------------------

TEST_CASE("deepseek: the 50 golden cases match Hugging Face ids and decode") {
    const dsi::Tokenizer &tok = deepseek();
    nlohmann::json golden = nlohmann::json::parse(read_file(DSI_TEST_DATA_DIR "/golden/tokenizer-cases.json"));
    REQUIRE(golden["cases"].size() == 50);
    for (const auto &c : golden["cases"]) {
        std::string text = c["text"];
        Ids expected = c["ids"].get<Ids>();
        CAPTURE(text);
        Ids ids = tok.encode(text, true);
        CHECK(ids == expected);
        CHECK(decode(tok, ids) == c["decoded"].get<std::string>());
    }
}

TEST_CASE("deepseek: vocabulary facts") {
    const dsi::Tokenizer &tok = deepseek();
    CHECK(tok.n_vocab() == 128815);
    CHECK(tok.token_id("<｜begin▁of▁sentence｜>") == 0);
    CHECK(tok.token_id("<｜end▁of▁sentence｜>") == 1);
    CHECK(tok.token_id("<｜User｜>") == 128803);
    CHECK(tok.token_id("Hello") == 19923);
    CHECK(tok.token_id("ĠHello") == 45948);
    CHECK(tok.token_id("no such token, surely") == -1);
    CHECK(tok.token_id("") == -1);
}

TEST_CASE("deepseek: empty and whitespace-only text") {
    const dsi::Tokenizer &tok = deepseek();
    CHECK(tok.encode("", true).empty());
    CHECK(tok.encode("", false).empty());
    CHECK(decode(tok, {}).empty());
    const std::pair<const char *, Ids> cases[] = {
        {" ", {223}},
        {"   ", {361}},
        {"\n\n", {271}},
        {"\t \n ", {200, 539, 223}},
        {"\r\n\r\n", {204, 201, 204, 201}},
        {"\u3000\u00a0 ", {18524, 84238}},
    };
    for (const auto &[text, expected] : cases) {
        CAPTURE(text);
        CHECK(tok.encode(text, true) == expected);
        CHECK(decode(tok, expected) == text);
    }
}

TEST_CASE("deepseek: long runs of one character are exact and fast") {
    const dsi::Tokenizer &tok = deepseek();
    struct Run {
        std::string text;
        size_t n_ids;
        uint64_t hash;
    };
    const Run runs[] = {
        {std::string(100000, 'a'), 12500, 12761571795960463413ull},
        {std::string(100000, ' '), 782, 1591443591196582208ull},
        {std::string(100000, '\n'), 6250, 10492598665323043917ull},
    };
    for (const Run &r : runs) {
        CAPTURE(r.text.substr(0, 1));
        auto t0 = std::chrono::steady_clock::now();
        Ids ids = tok.encode(r.text, true);
        double s = seconds_since(t0);
        MESSAGE("100k x '" << (r.text[0] == '\n' ? "\\n" : r.text.substr(0, 1)) << "': " << s << " s");
        CHECK(s < 5.0);  // generous: sanitizer builds on a shared machine
        CHECK(ids.size() == r.n_ids);
        CHECK(ids_hash(ids) == r.hash);
        CHECK(decode(tok, ids) == r.text);
    }
}

TEST_CASE("deepseek: 1 MB of mixed text matches Hugging Face and round-trips") {
    const dsi::Tokenizer &tok = deepseek();
    const std::string text = mixed_text(1 << 20);
    REQUIRE(text.size() == 1048616);

    auto t0 = std::chrono::steady_clock::now();
    Ids special = tok.encode(text, true);
    MESSAGE("1 MB encode: " << seconds_since(t0) << " s");
    CHECK(special.size() == 317612);
    CHECK(ids_hash(special) == 2827073978404627680ull);
    CHECK(decode(tok, special) == text);

    Ids plain = tok.encode(text, false);
    CHECK(plain.size() == 344398);
    CHECK(ids_hash(plain) == 15961010406098444150ull);
    CHECK(decode(tok, plain) == text);
}

TEST_CASE("deepseek: special tokens are parsed, or encoded as text") {
    const dsi::Tokenizer &tok = deepseek();
    const std::string text = "<｜begin▁of▁sentence｜>system<｜User｜>hi<｜Assistant｜>";
    CHECK(tok.encode(text, true) == Ids{0, 27824, 128803, 6366, 128804});
    Ids plain = tok.encode(text, false);
    CHECK(plain.size() > 5);
    for (int32_t id : plain) CHECK(id < 128000);  // no added token
    CHECK(decode(tok, plain) == text);
    CHECK(tok.encode("<｜User", true) == tok.encode("<｜User", false));  // a prefix is no token
}

TEST_CASE("deepseek: streaming decode of the golden cases equals whole decode") {
    const dsi::Tokenizer &tok = deepseek();
    auto shared = std::shared_ptr<const dsi::Tokenizer>(&tok, [](const dsi::Tokenizer *) {});
    nlohmann::json golden = nlohmann::json::parse(read_file(DSI_TEST_DATA_DIR "/golden/tokenizer-cases.json"));
    dsi::Detokenizer stream(shared);
    for (const auto &c : golden["cases"]) {
        std::string joined;
        for (int32_t id : c["ids"].get<Ids>()) {
            std::string_view piece = stream.push(id);
            CHECK(dsi::utf8::find_invalid(piece) == std::string_view::npos);
            joined += piece;
        }
        joined += stream.flush();
        CHECK(joined == c["decoded"].get<std::string>());
    }
}

// ---- Fixtures: a ByteLevel BPE trained by `tokenizers`, and a feature mix --------------

TEST_CASE("fixture: tokenizers-trained ByteLevel BPE with added tokens") {
    auto tok = fixture("bytelevel_bpe.json");
    CHECK(tok->n_vocab() == 1346);
    CHECK(tok->token_id("<|endoftext|>") == 1341);
    CHECK(tok->token_id("<mask>") == 1342);
    struct Case {
        const char *text;
        Ids special, plain;
        const char *decoded;
    };
    // Expected values from `tokenizers` (plain: the same file without its added tokens).
    const Case cases[] = {
        {"Hello world", {34, 58, 65, 155, 117, 111, 724}, {34, 58, 65, 155, 117, 111, 724}, "Hello world"},
        {"The model's weights; isn't it?",
         {351, 1018, 623, 1131, 22, 214, 67, 3, 73, 267, 1211},
         {351, 1018, 623, 1131, 22, 214, 67, 3, 73, 267, 1211},
         "The model's weights; isn't it?"},
        {"  two  spaces\n\nand\ttabs ",
         {87, 384, 87, 101, 363, 72, 86, 86, 353, 1185, 73, 54, 55, 72, 87},
         {87, 384, 87, 101, 363, 72, 86, 86, 353, 1185, 73, 54, 55, 72, 87},
         "  two  spaces\n\nand\ttabs "},
        {"x = 1234567 + 89",
         {77, 206, 188, 14, 15, 16, 17, 18, 19, 502, 87, 20, 1210},
         {77, 206, 188, 14, 15, 16, 17, 18, 19, 502, 87, 20, 1210},
         "x = 1234567 + 89"},
        {"😀 naïve café",
         {1325, 1247, 1240, 88, 149, 54, 84, 1262, 775, 87, 109, 59, 84, 1256},
         {1325, 1247, 1240, 88, 149, 54, 84, 1262, 775, 87, 109, 59, 84, 1256},
         "😀 naïve café"},
        {"a<|endoftext|>b", {54, 1341, 55}, {54, 23, 81, 390, 68, 59, 73, 112, 73, 81, 25, 55}, "a<|endoftext|>b"},
        // lstrip: the spaces before <mask> belong to it, so decode drops them
        {"text   <mask> masked", {73, 112, 73, 1342, 1142}, {73, 112, 73, 105, 233, 66, 197, 64, 25, 1142},
         "text<mask> masked"},
        {"a<mask>", {54, 1342}, {54, 23, 66, 197, 64, 25}, "a<mask>"},
        // single_word: only between non-word characters
        {"[SW] alone", {1343, 100, 729, 58}, {50, 43, 47, 51, 100, 729, 58}, "[SW] alone"},
        {"word[SW]word", {76, 111, 57, 50, 43, 47, 51, 76, 111, 57}, {76, 111, 57, 50, 43, 47, 51, 76, 111, 57},
         "word[SW]word"},
        // rstrip: the spaces after <rs> belong to it
        {"x <rs>   y", {77, 87, 1344, 78}, {77, 233, 71, 72, 25, 105, 505}, "x <rs>y"},
        // leftmost-longest: "<|end" is a token and a prefix of another
        {"<|end<|endoftext|>", {1345, 1341}, {23, 81, 390, 23, 81, 390, 68, 59, 73, 112, 73, 81, 25},
         "<|end<|endoftext|>"},
        {"", {}, {}, ""},
        {" ", {87}, {87}, " "},
    };
    for (const Case &c : cases) {
        CAPTURE(c.text);
        CHECK(tok->encode(c.text, true) == c.special);
        CHECK(tok->encode(c.text, false) == c.plain);
        CHECK(decode(*tok, c.special) == c.decoded);
        CHECK(decode(*tok, c.plain) == c.text);
    }
}

TEST_CASE("fixture: Split behaviours, Digits, prefix space, unk and ignore_merges") {
    // Sequence[Split \s+ Removed, Split "-" MergedWithNext, Split [.!?] MergedWithPrevious,
    // Split ^q|z$ Contiguous inverted, Digits individual, ByteLevel add_prefix_space];
    // BPE with "a b" merges after a #version line, unk_token fused, ignore_merges.
    auto tok = fixture("features.json");
    const std::pair<const char *, Ids> cases[] = {
        {"Hello world", {95, 40, 102, 79, 106}},
        {"hello world", {105, 106}},  // "Ġworld" comes only from ignore_merges
        {" the the", {98, 98}},
        {"the-hello-world", {98, 95, 13, 97, 101, 79, 95, 13, 87, 79, 82, 76, 68}},
        {"hi! what? ok.", {103, 73, 1, 95, 87, 72, 65, 84, 31, 95, 79, 75, 14}},
        {"abc 123 x9y", {100, 67, 95, 17, 95, 18, 95, 19, 95, 88, 95, 25, 95, 89}},
        {"qaz\nqz zq", {95, 81, 99, 95, 90, 95, 81, 90, 95, 90, 81}},
        {"über café", {95, 0, 66, 69, 82, 95, 67, 65, 70, 0}},
        {"naïve ∞ ok", {95, 78, 65, 0, 86, 69, 95, 0, 95, 79, 75}},
        {"", {}},
        {"   ", {}},
        {"world", {106}},
    };
    for (const auto &[text, expected] : cases) {
        CAPTURE(text);
        CHECK(tok->encode(text, true) == expected);
    }
    CHECK(decode(*tok, {95, 0, 66, 69, 82}) == " <unk>ber");
}

TEST_CASE("fixture: a tokenizer that is not byte-level, with byte_fallback") {
    // Characters missing from the vocabulary become <0xXX> tokens, as sentencepiece-style
    // BPE files do; the ByteLevel decoder leaves such tokens as they are.
    const char *json = R"({
      "normalizer": null,
      "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": false},
      "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
      "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
                "vocab": {"<unk>": 0, "a": 1, "b": 2, " ": 3, "ab": 4, " ab": 5, "<0xC3>": 6, "<0xA9>": 7},
                "merges": [["a", "b"], [" ", "ab"]]}
    })";
    auto tok = dsi::Tokenizer::load_json(json, "inline");
    CHECK(tok->encode("ab ab", false) == Ids{4, 5});
    CHECK(tok->encode("é", false) == Ids{6, 7});  // U+00E9 is C3 A9
    CHECK(tok->encode("aü", false) == Ids{1, 0});  // C3 BC: no <0xBC>, so <unk>
    CHECK(decode(*tok, {4, 5, 6}) == "ab ab<0xC3>");
}

TEST_CASE("tokenizer: concurrent encodes on one tokenizer agree") {
    auto tok = fixture("bytelevel_bpe.json");
    const std::string text = mixed_text(64 * 1024);
    const Ids expected = tok->encode(text, true);
    std::vector<Ids> results(4);
    std::vector<std::thread> threads;
    for (Ids &r : results) threads.emplace_back([&] { r = tok->encode(text, true); });
    for (std::thread &t : threads) t.join();
    for (const Ids &r : results) CHECK(r == expected);
}

// ---- Streaming detokenizer -----------------------------------------------------------

TEST_CASE("detokenizer: text comes out only in whole characters") {
    auto tok = fixture("bytelevel_bpe.json");
    const Ids emoji = tok->encode("😀", true);  // four byte tokens
    REQUIRE(emoji.size() == 4);
    dsi::Detokenizer stream(tok);
    CHECK(stream.push(emoji[0]).empty());
    CHECK(stream.push(emoji[1]).empty());
    CHECK(stream.push(emoji[2]).empty());
    CHECK(stream.push(emoji[3]) == "😀");
    CHECK(stream.flush().empty());

    const std::string text = mixed_text(20000);
    const Ids ids = tok->encode(text, true);
    std::string joined;
    for (int32_t id : ids) {
        std::string_view piece = stream.push(id);
        CHECK(dsi::utf8::find_invalid(piece) == std::string_view::npos);
        joined += piece;
    }
    joined += stream.flush();
    CHECK(joined == text);
    CHECK(joined == decode(*tok, ids));
}

TEST_CASE("detokenizer: flush turns a dangling partial character into U+FFFD") {
    auto tok = fixture("bytelevel_bpe.json");
    const Ids emoji = tok->encode("😀", true);
    dsi::Detokenizer stream(tok);
    CHECK(stream.push(tok->token_id("a")) == "a");
    CHECK(stream.push(emoji[0]).empty());
    CHECK(stream.push(emoji[1]).empty());
    CHECK(stream.flush() == "\xEF\xBF\xBD");
    CHECK(decode(*tok, {emoji[0], emoji[1]}) == "\xEF\xBF\xBD");
    // After a flush the stream starts anew.
    for (size_t i = 0; i + 1 < emoji.size(); ++i) CHECK(stream.push(emoji[i]).empty());
    CHECK(stream.push(emoji.back()) == "😀");
    // A byte that cannot continue the pending sequence ends it as U+FFFD at once.
    CHECK(stream.push(emoji[0]).empty());
    CHECK(stream.push(tok->token_id("a")) == "\xEF\xBF\xBD" "a");
}

TEST_CASE("detokenizer: an invalid id leaves the stream unchanged") {
    auto tok = fixture("bytelevel_bpe.json");
    const Ids emoji = tok->encode("😀", true);
    dsi::Detokenizer stream(tok);
    CHECK(stream.push(emoji[0]).empty());
    CHECK_THROWS_AS(stream.push(tok->n_vocab()), dsi::Error);
    for (size_t i = 1; i < emoji.size(); ++i) stream.push(emoji[i]);
    CHECK(stream.flush().empty());
}

TEST_CASE("utf8: lossy decoding replaces each maximal ill-formed subpart") {
    auto lossy = [](std::string_view s) {
        std::string out;
        dsi::utf8::append_lossy(out, s);
        return out;
    };
    const std::string fffd = "\xEF\xBF\xBD";
    CHECK(lossy("abc") == "abc");
    CHECK(lossy("a\xF0\x9F\x98") == "a" + fffd);            // truncated 4-byte: one U+FFFD
    CHECK(lossy("\xF0\x9F\x98" "a") == fffd + "a");
    CHECK(lossy("\xC0\x80") == fffd + fffd);                 // overlong: each byte
    CHECK(lossy("\xED\xA0\x80") == fffd + fffd + fffd);      // surrogate
    CHECK(lossy("\xE2\x82\xACx\x80") == "\xE2\x82\xAC" "x" + fffd);
    CHECK(lossy("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd);  // above U+10FFFF
    CHECK(dsi::utf8::stable_prefix("ab\xE2\x82") == 2);
    CHECK(dsi::utf8::stable_prefix("ab\xE2\x41") == 4);
    CHECK(dsi::utf8::find_invalid("ok \xE2\x82\xAC ok") == std::string_view::npos);
}

// ---- C API ---------------------------------------------------------------------------

TEST_CASE("C API: load, query, tokenize and detokenize with exact buffer sizes") {
    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load(DSI_TEST_DATA_DIR "/tokenizer/bytelevel_bpe.json", &tok) == DSI_OK);
    REQUIRE(tok != nullptr);
    CHECK(dsi_tokenizer_n_vocab(tok) == 1346);
    CHECK(dsi_tokenizer_token_id(tok, "<|endoftext|>") == 1341);
    CHECK(dsi_tokenizer_token_id(tok, "no such token") == -1);

    const std::string text = "a<|endoftext|>b";
    size_t n = 0;
    CHECK(dsi_tokenize(tok, text.data(), text.size(), 1, nullptr, 0, &n) == DSI_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 3);
    CHECK(std::string(dsi_last_error()).find("needs 3 ids") != std::string::npos);
    int32_t ids[3] = {};
    n = 0;
    CHECK(dsi_tokenize(tok, text.data(), text.size(), 1, ids, 2, &n) == DSI_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 3);
    REQUIRE(dsi_tokenize(tok, text.data(), text.size(), 1, ids, 3, &n) == DSI_OK);
    CHECK(Ids(ids, ids + n) == Ids{54, 1341, 55});
    REQUIRE(dsi_tokenize(tok, text.data(), text.size(), 0, nullptr, 0, &n) == DSI_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 12);
    CHECK(dsi_tokenize(tok, nullptr, 0, 1, nullptr, 0, &n) == DSI_OK);
    CHECK(n == 0);

    size_t len = 0;
    CHECK(dsi_detokenize(tok, ids, 3, 0, nullptr, 0, &len) == DSI_ERR_BUFFER_TOO_SMALL);
    CHECK(len == text.size());
    CHECK(std::string(dsi_last_error()).find("needs 15 bytes") != std::string::npos);
    char buf[32];
    std::fill(std::begin(buf), std::end(buf), 'X');
    REQUIRE(dsi_detokenize(tok, ids, 3, 0, buf, text.size(), &len) == DSI_OK);  // no room for NUL
    CHECK(std::string(buf, len) == text);
    CHECK(buf[len] == 'X');
    REQUIRE(dsi_detokenize(tok, ids, 3, 0, buf, sizeof buf, &len) == DSI_OK);
    CHECK(std::string(buf) == text);

    dsi_detokenizer *stream = nullptr;
    REQUIRE(dsi_detokenizer_create(tok, 0, &stream) == DSI_OK);
    std::string joined;
    for (int32_t id : {54, 1341, 55}) {
        const char *piece = nullptr;
        size_t piece_len = 0;
        REQUIRE(dsi_detokenizer_push(stream, id, &piece, &piece_len) == DSI_OK);
        joined.append(piece, piece_len);
    }
    const char *rest = nullptr;
    size_t rest_len = 1;
    REQUIRE(dsi_detokenizer_flush(stream, &rest, &rest_len) == DSI_OK);
    CHECK(rest_len == 0);
    CHECK(joined == text);
    CHECK(dsi_detokenizer_push(stream, 1346, &rest, &rest_len) == DSI_ERR_INVALID_TOKEN);
    dsi_detokenizer_free(stream);
    dsi_tokenizer_free(tok);
    dsi_detokenizer_free(nullptr);
    dsi_tokenizer_free(nullptr);
}

TEST_CASE("C API: a streaming decoder keeps its tokenizer alive") {
    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load(DSI_TEST_DATA_DIR "/tokenizer/features.json", &tok) == DSI_OK);
    dsi_detokenizer *stream = nullptr;
    REQUIRE(dsi_detokenizer_create(tok, 0, &stream) == DSI_OK);
    dsi_tokenizer_free(tok);
    const char *piece = nullptr;
    size_t len = 0;
    REQUIRE(dsi_detokenizer_push(stream, 106, &piece, &len) == DSI_OK);
    CHECK(std::string(piece, len) == " world");
    dsi_detokenizer_free(stream);
}
