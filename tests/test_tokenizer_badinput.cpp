// labels: tokenizer badinput cpu
// Bad input to the tokenizer: every failure has its exact status and a message that names
// the problem. Runs on small inline tokenizers, so it needs no downloaded file.
#include <doctest/doctest.h>

#include "common/error.h"
#include "dsinfer.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using json = nlohmann::json;

// A valid byte-level tokenizer.json to break one field at a time. Id 5 is a hole, and "<s>"
// gets id 6 (`tokenizers` ignores the "id" field: an added token takes the vocabulary size).
json valid_tokenizer() {
    return json::parse(R"({
      "added_tokens": [{"id": 99, "content": "<s>", "special": true, "normalized": false,
                        "lstrip": false, "rstrip": false, "single_word": false}],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "x": 7},
                "merges": ["a b", "Ġ ab"]}
    })");
}

// Loads `text` and returns the error, which must have status `status`.
std::string load_error(const std::string &text, dsi_status status) {
    try {
        dsi::Tokenizer::load_json(text, "bad.json");
    } catch (const dsi::Error &e) {
        CHECK(e.status() == status);
        return e.what();
    }
    FAIL("loading succeeded: " << text);
    return "";
}

std::string format_error(const json &j) { return load_error(j.dump(), DSI_ERR_FORMAT); }

bool contains(const std::string &haystack, const std::string &needle) {
    return haystack.find(needle) != std::string::npos;
}

std::unique_ptr<dsi::Tokenizer> small() { return dsi::Tokenizer::load_json(valid_tokenizer().dump(), "small.json"); }

// A tokenizer handle for the C API tests, from a file written next to the test binary.
dsi_tokenizer *small_handle() {
    const std::string path = DSI_BINARY_DIR "/tokenizer_badinput_small.json";
    std::ofstream(path) << valid_tokenizer().dump();
    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load(path.c_str(), &tok) == DSI_OK);
    return tok;
}

}  // namespace

TEST_CASE("the valid base tokenizer loads and works") {
    auto tok = small();
    CHECK(tok->n_vocab() == 8);
    CHECK(tok->encode("ab ab<s>", true) == std::vector<int32_t>{2, 4, 6});
}

// ---- Malformed tokenizer.json -------------------------------------------------------------

TEST_CASE("tokenizer.json that is not JSON, or not an object") {
    std::string msg = load_error("{\"model\": ", DSI_ERR_FORMAT);
    CHECK(contains(msg, "bad.json: not valid JSON"));
    CHECK(contains(load_error("[1, 2]", DSI_ERR_FORMAT), "bad.json: the top level is not a JSON object"));
    CHECK(contains(load_error("", DSI_ERR_FORMAT), "not valid JSON"));
    // A number beyond double's range is nlohmann's out_of_range, not a parse_error (fuzz_tokenizer_load).
    CHECK(contains(load_error("499949E499.898316499", DSI_ERR_FORMAT), "not valid JSON"));
}

TEST_CASE("tokenizer.json without a model, or with a model that is not BPE") {
    json j = valid_tokenizer();
    j.erase("model");
    CHECK(contains(format_error(j), "bad.json: missing \"model\""));

    j = valid_tokenizer();
    j["model"]["type"] = "WordPiece";
    CHECK(contains(format_error(j), "model type \"WordPiece\" is not supported (only BPE)"));

    j = valid_tokenizer();
    j["model"].erase("vocab");
    CHECK(contains(format_error(j), "model has no \"vocab\""));

    j = valid_tokenizer();
    j["model"]["vocab"] = json::array();
    CHECK(contains(format_error(j), "model.vocab must be an object"));

    j = valid_tokenizer();
    j["model"]["vocab"]["c"] = -4;
    CHECK(contains(format_error(j), "model.vocab[\"c\"] must be an id"));

    j = valid_tokenizer();
    j["model"]["dropout"] = 0.1;
    CHECK(contains(format_error(j), "model.dropout is not supported"));

    j = valid_tokenizer();
    j["model"]["unk_token"] = "<unk>";
    CHECK(contains(format_error(j), "model.unk_token \"<unk>\" is not in model.vocab"));

    j = valid_tokenizer();
    j["model"]["continuing_subword_prefix"] = "##";
    CHECK(contains(format_error(j), "model.continuing_subword_prefix is not supported"));
}

TEST_CASE("merges that name unknown tokens or are malformed") {
    json j = valid_tokenizer();
    j["model"]["merges"] = {"a b", "a zz"};
    CHECK(contains(format_error(j), "model.merges[1] names token \"zz\", which is not in model.vocab"));

    j = valid_tokenizer();
    j["model"]["merges"] = {"b a"};  // "ba" is not in the vocabulary
    CHECK(contains(format_error(j), "model.merges[0] names token \"ba\", which is not in model.vocab"));

    j = valid_tokenizer();
    j["model"]["merges"] = {"ab"};
    CHECK(contains(format_error(j), "model.merges[0] \"ab\" is not two tokens separated by one space"));

    j = valid_tokenizer();
    j["model"]["merges"] = {"a b c"};
    CHECK(contains(format_error(j), "model.merges[0] \"a b c\" is not two tokens separated by one space"));

    j = valid_tokenizer();
    j["model"]["merges"] = json::array({5});
    CHECK(contains(format_error(j), "model.merges[0] must be \"a b\" or [\"a\", \"b\"]"));

    j = valid_tokenizer();
    j["model"]["merges"] = json::array({json::array({"a"})});
    CHECK(contains(format_error(j), "model.merges[0] must be \"a b\" or [\"a\", \"b\"]"));

    j = valid_tokenizer();
    j["model"]["merges"] = "a b";
    CHECK(contains(format_error(j), "model.merges must be an array"));

    j = valid_tokenizer();
    j["model"]["merges"] = {"#version: 0.2", "a b", "Ġ ab"};  // a merges.txt header is skipped
    CHECK(dsi::Tokenizer::load_json(j.dump(), "ok.json")->encode(" ab", true) == std::vector<int32_t>{4});
}

TEST_CASE("a bad regex or an unsupported component is named") {
    json j = valid_tokenizer();
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(ab"}}}, {"behavior", "Isolated"}, {"invert", false}};
    std::string msg = format_error(j);
    CHECK(contains(msg, "bad.json: pre_tokenizer: bad regex \"(ab\""));
    CHECK(contains(msg, "missing closing parenthesis"));

    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}, {"invert", false}};
    CHECK(contains(format_error(j), "pre_tokenizer.behavior \"Sideways\" is not a split behavior"));

    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", "a"}, {"behavior", "Isolated"}, {"invert", false}};
    CHECK(contains(format_error(j), "pre_tokenizer.pattern must be {\"Regex\": ...} or {\"String\": ...}"));

    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Isolated"}, {"invert", "yes"}};
    CHECK(contains(format_error(j), "bad.json: pre_tokenizer.invert must be true or false"));

    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
    CHECK(contains(format_error(j), "pre_tokenizer type \"Metaspace\" is not supported"));

    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "ByteLevel"}, {"add_prefix_space", false}},
                            {{"type", "Digits"}, {"individual_digits", true}}}}};
    CHECK(contains(format_error(j), "pre_tokenizer.pretokenizers[1]: nothing may follow the ByteLevel pre-tokenizer"));

    j = valid_tokenizer();
    j["normalizer"] = {{"type", "NFC"}};
    CHECK(contains(format_error(j), "bad.json: normalizer type \"NFC\" is not supported"));

    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}};
    CHECK(contains(format_error(j), "normalizer.normalizers[0] type \"Lowercase\" is not supported"));

    j = valid_tokenizer();
    j["decoder"] = {{"type", "WordPiece"}};
    CHECK(contains(format_error(j), "decoder type \"WordPiece\" is not supported (only ByteLevel)"));

    j["decoder"] = nullptr;
    CHECK(contains(format_error(j), "decoder is null"));

    j = valid_tokenizer();
    j["pre_tokenizer"] = {{"pattern", "x"}};
    CHECK(contains(format_error(j), "pre_tokenizer has no \"type\""));
}

TEST_CASE("malformed added tokens") {
    json j = valid_tokenizer();
    j["added_tokens"] = {{{"id", 9}}};
    CHECK(contains(format_error(j), "added_tokens[0] has no \"content\" string"));

    j["added_tokens"] = {{{"id", 9}, {"content", "<x>"}, {"lstrip", 1}}};
    CHECK(contains(format_error(j), "bad.json: added_tokens[0].lstrip must be true or false"));

    j["added_tokens"] = json::object();
    CHECK(contains(format_error(j), "added_tokens must be an array"));
}

TEST_CASE("missing or unreadable tokenizer files") {
    dsi_tokenizer *tok = reinterpret_cast<dsi_tokenizer *>(1);
    CHECK(dsi_tokenizer_load("/nonexistent/dir/tokenizer.json", &tok) == DSI_ERR_IO);
    CHECK(tok == nullptr);
    CHECK(contains(dsi_last_error(), "cannot open tokenizer file /nonexistent/dir/tokenizer.json"));

    const std::string path = DSI_BINARY_DIR "/tokenizer_badinput_broken.json";
    std::ofstream(path) << R"({"model": {"type": "Unigram", "vocab": []}})";
    CHECK(dsi_tokenizer_load(path.c_str(), &tok) == DSI_ERR_FORMAT);
    CHECK(tok == nullptr);
    CHECK(contains(dsi_last_error(), path + ": model type \"Unigram\" is not supported"));
    std::remove(path.c_str());
}

// ---- Invalid text and ids ---------------------------------------------------------------------

TEST_CASE("encoding invalid UTF-8 is DSI_ERR_PARSE with the byte offset") {
    auto tok = small();
    struct Case {
        std::string text;
        size_t offset;
        const char *byte;
    };
    const Case cases[] = {
        {"abc\xFF" "def", 3, "0xFF"},
        {"ok\xE2\x82", 2, "0xE2"},        // truncated at the end
        {"\xC0\x80", 0, "0xC0"},          // overlong NUL
        {"ab\xED\xA0\x80", 2, "0xED"},    // UTF-16 surrogate
        {"\xF4\x90\x80\x80", 0, "0xF4"},  // above U+10FFFF
        {"caf\xC3\xA9 \x80", 6, "0x80"},  // lone continuation byte after valid text
    };
    for (const Case &c : cases) {
        CAPTURE(c.offset);
        for (bool special : {true, false}) {
            try {
                tok->encode(c.text, special);
                FAIL("encode accepted invalid UTF-8");
            } catch (const dsi::Error &e) {
                CHECK(e.status() == DSI_ERR_PARSE);
                CHECK(contains(e.what(), "at byte offset " + std::to_string(c.offset)));
                CHECK(contains(e.what(), std::string("bad byte ") + c.byte));
            }
        }
    }

    dsi_tokenizer *handle = small_handle();
    size_t n = 99;
    CHECK(dsi_tokenize(handle, "abc\xFF", 4, 1, nullptr, 0, &n) == DSI_ERR_PARSE);
    CHECK(contains(dsi_last_error(), "not valid UTF-8: bad byte 0xFF at byte offset 3"));
    dsi_tokenizer_free(handle);
}

TEST_CASE("decoding an id outside the vocabulary is DSI_ERR_INVALID_TOKEN") {
    auto tok = small();
    const int32_t bad_low[] = {0, -1};
    try {
        tok->decode(bad_low, 2);
        FAIL("decode accepted id -1");
    } catch (const dsi::Error &e) {
        CHECK(e.status() == DSI_ERR_INVALID_TOKEN);
        CHECK(std::string(e.what()) == "token id -1 at position 1 is outside [0, 8)");
    }
    const int32_t bad_high[] = {8};
    try {
        tok->decode(bad_high, 1);
        FAIL("decode accepted id 8");
    } catch (const dsi::Error &e) {
        CHECK(e.status() == DSI_ERR_INVALID_TOKEN);
        CHECK(std::string(e.what()) == "token id 8 at position 0 is outside [0, 8)");
    }
    // An id inside the range that no token has (5 here) decodes to nothing, as in `tokenizers`.
    const int32_t hole[] = {2, 5, 2};
    CHECK(tok->decode(hole, 3) == "abab");

    dsi_tokenizer *handle = small_handle();
    char buf[16];
    size_t len = 0;
    const int32_t big[] = {INT32_MAX};
    CHECK(dsi_detokenize(handle, big, 1, 0, buf, sizeof buf, &len) == DSI_ERR_INVALID_TOKEN);
    CHECK(std::string(dsi_last_error()) == "token id 2147483647 at position 0 is outside [0, 8)");

    dsi_detokenizer *stream = nullptr;
    REQUIRE(dsi_detokenizer_create(handle, 0, &stream) == DSI_OK);
    const char *text = nullptr;
    CHECK(dsi_detokenizer_push(stream, -3, &text, &len) == DSI_ERR_INVALID_TOKEN);
    CHECK(std::string(dsi_last_error()) == "token id -3 is outside [0, 8)");
    dsi_detokenizer_free(stream);
    dsi_tokenizer_free(handle);
}

// ---- NULL arguments ------------------------------------------------------------------------

TEST_CASE("NULL arguments are DSI_ERR_INVALID_ARGUMENT") {
    auto expect = [](dsi_status st, const char *message) {
        CHECK(st == DSI_ERR_INVALID_ARGUMENT);
        CHECK(std::string(dsi_last_error()) == message);
    };
    dsi_tokenizer *tok = reinterpret_cast<dsi_tokenizer *>(1);
    expect(dsi_tokenizer_load(nullptr, &tok), "dsi_tokenizer_load: path is NULL");
    CHECK(tok == nullptr);
    expect(dsi_tokenizer_load("x.json", nullptr), "dsi_tokenizer_load: out is NULL");

    CHECK(dsi_tokenizer_n_vocab(nullptr) == 0);
    CHECK(dsi_tokenizer_token_id(nullptr, "a") == -1);

    dsi_tokenizer *handle = small_handle();
    CHECK(dsi_tokenizer_token_id(handle, nullptr) == -1);
    int32_t ids[4];
    size_t n = 0;
    expect(dsi_tokenize(nullptr, "a", 1, 1, ids, 4, &n), "dsi_tokenize: tokenizer is NULL");
    expect(dsi_tokenize(handle, nullptr, 3, 1, ids, 4, &n), "dsi_tokenize: text is NULL but text_len is not 0");
    expect(dsi_tokenize(handle, "a", 1, 1, nullptr, 4, &n), "dsi_tokenize: ids is NULL but cap is not 0");
    expect(dsi_tokenize(handle, "a", 1, 1, ids, 4, nullptr), "dsi_tokenize: n_ids is NULL");

    char buf[8];
    size_t len = 0;
    expect(dsi_detokenize(nullptr, ids, 0, 0, buf, 8, &len), "dsi_detokenize: tokenizer is NULL");
    expect(dsi_detokenize(handle, nullptr, 2, 0, buf, 8, &len), "dsi_detokenize: ids is NULL but n_ids is not 0");
    expect(dsi_detokenize(handle, ids, 0, 0, nullptr, 8, &len), "dsi_detokenize: text is NULL but cap is not 0");
    expect(dsi_detokenize(handle, ids, 0, 0, buf, 8, nullptr), "dsi_detokenize: text_len is NULL");

    dsi_detokenizer *stream = reinterpret_cast<dsi_detokenizer *>(1);
    expect(dsi_detokenizer_create(nullptr, 0, &stream), "dsi_detokenizer_create: tokenizer is NULL");
    CHECK(stream == nullptr);
    expect(dsi_detokenizer_create(handle, 0, nullptr), "dsi_detokenizer_create: out is NULL");

    const char *text = nullptr;
    expect(dsi_detokenizer_push(nullptr, 0, &text, &len), "dsi_detokenizer_push: detokenizer is NULL");
    expect(dsi_detokenizer_flush(nullptr, &text, &len), "dsi_detokenizer_flush: detokenizer is NULL");
    REQUIRE(dsi_detokenizer_create(handle, 0, &stream) == DSI_OK);
    expect(dsi_detokenizer_push(stream, 0, nullptr, &len), "dsi_detokenizer_push: text or text_len is NULL");
    expect(dsi_detokenizer_flush(stream, &text, nullptr), "dsi_detokenizer_flush: text or text_len is NULL");
    dsi_detokenizer_free(stream);
    dsi_tokenizer_free(handle);
}
