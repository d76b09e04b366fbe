// Hugging Face tokenizer.json, BPE model, reproducing `tokenizers` (its tokenizer/,
// pre_tokenizers/ and models/bpe/ modules) with add_special_tokens=False:
//
//   text -> added tokens split out (two passes: tokens matched on the raw text, then tokens
//           matched on the normalized text) -> pre-tokenizer pieces -> BPE merges -> ids
//
// The pre-tokenizer regexes are the file's own, run by PCRE2. `tokenizers` runs them with
// Oniguruma, so the places where the two dialects disagree and that a tokenizer.json plausibly
// uses are bridged (see oniguruma_to_pcre2); \w and \b keep PCRE2's meaning (no marks). The
// ByteLevel byte->char mapping is applied lazily: pieces stay raw bytes and the model looks up
// each byte's character id in a table.
//
// Supported: normalizer null or an empty Sequence; pre-tokenizers Sequence, Split, Digits,
// ByteLevel (last); BPE with vocab, merges, unk_token, fuse_unk, byte_fallback, ignore_merges;
// the ByteLevel decoder. Anything else is refused with DSI_ERR_FORMAT. Of the post_processor
// only the ids a TemplateProcessing "single" template puts around the text are kept, for
// add_special (add_special_tokens=True); truncation and padding are ignored.
#include "text/tokenizer.h"

#include "common/error.h"
#include "common/file.h"
#include "common/json_text.h"
#include "text/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <unordered_map>

namespace dsi {

namespace {

using json = nlohmann::json;

size_t char_len(std::string_view s, size_t i) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

// Code point of the valid UTF-8 character at s[i].
uint32_t code_point(std::string_view s, size_t i, size_t len) {
    const unsigned char *p = reinterpret_cast<const unsigned char *>(s.data()) + i;
    static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = p[0] & lead_mask[len];
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (p[k] & 0x3F);
    return cp;
}

void append_code_point(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// ===================================================================================
// Byte-level alphabet (GPT-2): every byte stands for one printable character
// ===================================================================================

struct ByteAlphabet {
    std::array<uint32_t, 256> char_of{};  // byte -> code point
    std::array<int16_t, 512> byte_of{};   // code point -> byte, -1 when not in the alphabet

    ByteAlphabet() {
        byte_of.fill(-1);
        // Printable Latin-1 stands for itself; the other bytes take 256, 257, ... in order.
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char_of[b] = printable ? static_cast<uint32_t>(b) : next++;
            byte_of[char_of[b]] = static_cast<int16_t>(b);
        }
    }

    std::string utf8_of(uint8_t b) const {
        std::string s;
        append_code_point(s, char_of[b]);
        return s;
    }

    // ByteLevel decoder: a token made only of alphabet characters becomes the bytes they
    // stand for; any other token is kept as its own UTF-8.
    std::string decode_token(std::string_view token) const {
        std::string out;
        for (size_t i = 0; i < token.size();) {
            size_t len = char_len(token, i);
            uint32_t cp = code_point(token, i, len);
            if (cp >= byte_of.size() || byte_of[cp] < 0) return std::string(token);
            out += static_cast<char>(byte_of[cp]);
            i += len;
        }
        return out;
    }
};

const ByteAlphabet &byte_alphabet() {
    static const ByteAlphabet alphabet;
    return alphabet;
}

// ===================================================================================
// PCRE2
// ===================================================================================

// Per-call matching state: PCRE2 match data must not be shared between threads.
class MatchScratch {
public:
    MatchScratch() : data_(pcre2_match_data_create(1, nullptr)), context_(pcre2_match_context_create(nullptr)) {
        if (!data_ || !context_) {
            pcre2_match_data_free(data_);
            pcre2_match_context_free(context_);
            throw std::bad_alloc();
        }
    }
    ~MatchScratch() {
        pcre2_match_context_free(context_);
        pcre2_jit_stack_free(stack_);
        pcre2_match_data_free(data_);
    }
    MatchScratch(const MatchScratch &) = delete;
    MatchScratch &operator=(const MatchScratch &) = delete;

    pcre2_match_data *data() { return data_; }

    // PCRE2's default match limit (10 million steps) is a fixed number, so a valid text
    // such as 10 MB of spaces exceeded it. The pre-tokenizer patterns of real tokenizers
    // take a few steps per byte; the limit is set per subject to kMatchStepsPerByte steps
    // a byte, which keeps matching linear and still stops a catastrophically
    // backtracking pattern from a tokenizer.json.
    static constexpr uint32_t kMatchStepsPerByte = 64;
    pcre2_match_context *context(size_t subject_bytes) {
        const uint64_t steps = std::max<uint64_t>(10000000, uint64_t(kMatchStepsPerByte) * subject_bytes);
        pcre2_set_match_limit(context_, static_cast<uint32_t>(std::min<uint64_t>(steps, UINT32_MAX)));
        return context_;
    }

    // JIT code starts on a 32 KiB machine-stack area; a pattern that backtracks over a long
    // run (e.g. `\s+(?!\S)` on megabytes of spaces) needs more. Returns false when already big.
    bool grow_jit_stack() {
        if (stack_) return false;
        stack_ = pcre2_jit_stack_create(64 * 1024, 256 * 1024 * 1024, nullptr);
        if (!stack_) throw std::bad_alloc();
        pcre2_jit_stack_assign(context_, nullptr, stack_);
        return true;
    }

private:
    pcre2_match_data *data_;
    pcre2_match_context *context_;
    pcre2_jit_stack *stack_ = nullptr;
};

// `tokenizers` compiles patterns with Oniguruma. Its `\s` is Unicode White_Space (PCRE2's
// also takes U+180E) and its `\h` is a hex digit (PCRE2's is horizontal space); rewrite both
// to the PCRE2 property with Oniguruma's meaning, which is valid inside a class too.
std::string oniguruma_to_pcre2(const std::string &pattern) {
    std::string out;
    out.reserve(pattern.size() + 32);
    for (size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] != '\\' || i + 1 == pattern.size()) {
            out += pattern[i];
            continue;
        }
        char e = pattern[++i];
        switch (e) {
        case 's': out += "\\p{White_Space}"; break;
        case 'S': out += "\\P{White_Space}"; break;
        case 'h': out += "\\p{AHex}"; break;
        case 'H': out += "\\P{AHex}"; break;
        default: out += '\\'; out += e;
        }
    }
    return out;
}

class Regex {
public:
    enum class Syntax { Oniguruma, Literal, Pcre2 };

    Regex(const std::string &pattern, Syntax syntax, const std::string &where) : pattern_(pattern) {
        std::string source = syntax == Syntax::Oniguruma ? oniguruma_to_pcre2(pattern) : pattern;
        // Oniguruma's ^ and $ are line anchors, and its newline is LF only.
        uint32_t options = PCRE2_UTF | (syntax == Syntax::Literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
        pcre2_compile_context *cc = pcre2_compile_context_create(nullptr);
        if (!cc) throw std::bad_alloc();
        pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
        int err = 0;
        PCRE2_SIZE at = 0;
        code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &err, &at, cc);
        pcre2_compile_context_free(cc);
        if (!code_) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            fail(DSI_ERR_FORMAT, "%s: bad regex \"%s\": %s (at offset %zu)", where.c_str(), pattern.c_str(),
                 reinterpret_cast<const char *>(msg), static_cast<size_t>(at));
        }
        // Without JIT (unsupported CPU) the interpreter gives the same matches, only slower.
        pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
    }
    ~Regex() { pcre2_code_free(code_); }
    Regex(const Regex &) = delete;
    Regex &operator=(const Regex &) = delete;

    // The first match starting at or after `from`; the text before `from` stays visible to
    // lookbehinds and anchors. `subject` must be valid UTF-8 and `from` a character boundary.
    bool find(std::string_view subject, size_t from, MatchScratch &m, size_t &start, size_t &end) const {
        for (;;) {
            int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), from,
                                 PCRE2_NO_UTF_CHECK, m.data(), m.context(subject.size() - from));
            if (rc == PCRE2_ERROR_NOMATCH) return false;
            if (rc >= 0) {
                const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m.data());
                start = ov[0];
                end = ov[1];
                return true;
            }
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT && m.grow_jit_stack()) continue;
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            // The pattern is the tokenizer file's: one that backtracks without bound
            // (or a resource PCRE2 ran out of) is that file's problem, not a bug here.
            fail(rc == PCRE2_ERROR_NOMEMORY ? DSI_ERR_NO_MEMORY : DSI_ERR_UNSUPPORTED,
                 "the tokenizer's regex \"%s\" cannot match a %zu-byte piece of text within its limits: %s",
                 pattern_.c_str(), subject.size(), reinterpret_cast<const char *>(msg));
        }
    }

    // Whether the single character `ch` matches (the pattern is a one-character class).
    bool matches_char(std::string_view ch, MatchScratch &m) const {
        size_t s, e;
        return find(ch, 0, m, s, e) && s == 0 && e == ch.size();
    }

private:
    std::string pattern_;
    pcre2_code *code_ = nullptr;
};

// ===================================================================================
// Hash map from a pair of ids to its merge (open addressing: the hot loop of BPE)
// ===================================================================================

struct Merge {
    uint32_t rank;
    int32_t new_id;
};

class PairMap {
public:
    void reserve(size_t n) {
        size_t bits = 4;
        while ((size_t(1) << bits) < 2 * n) ++bits;
        slots_.assign(size_t(1) << bits, Slot{kEmpty, {0, 0}});
        mask_ = (size_t(1) << bits) - 1;
        shift_ = 64 - bits;
    }
    // A later entry for the same pair replaces the earlier one, as a Rust HashMap collect does.
    void set(int32_t a, int32_t b, Merge m) {
        uint64_t key = pack(a, b);
        size_t i = slot_of(key);
        while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
        slots_[i] = Slot{key, m};
    }
    const Merge *get(int32_t a, int32_t b) const {
        uint64_t key = pack(a, b);
        for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
            if (slots_[i].key == key) return &slots_[i].merge;
            if (slots_[i].key == kEmpty) return nullptr;
        }
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t(0);  // ids are non-negative int32
    struct Slot {
        uint64_t key;
        Merge merge;
    };
    static uint64_t pack(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    // Fibonacci hashing: the top bits of the product are the well-mixed ones.
    size_t slot_of(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }

    std::vector<Slot> slots_;
    size_t mask_ = 0;
    unsigned shift_ = 64;
};

// ===================================================================================
// Added tokens
// ===================================================================================

struct AddedToken {
    std::string content;
    bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;

    bool operator==(const AddedToken &o) const {
        return content == o.content && single_word == o.single_word && lstrip == o.lstrip && rstrip == o.rstrip &&
               normalized == o.normalized && special == o.special;
    }
};

// Leftmost-longest matching of a set of strings (what `tokenizers` does with Aho-Corasick).
// The trie holds the tokens reversed, with Aho-Corasick failure links: one right-to-left
// pass over a text gives, for every position, the longest token starting there, and a
// greedy left-to-right walk over that is leftmost-longest. Building is linear in the
// total token length and each text costs O(its length), however long or overlapping the
// tokens are (a forward walk from every position would be O(text x longest token)).
class TokenMatcher {
public:
    TokenMatcher() : nodes_(1) {}

    void add(std::string_view s, int32_t id) {
        int32_t node = 0;
        for (size_t i = s.size(); i-- > 0;) {
            const unsigned char b = static_cast<unsigned char>(s[i]);
            int32_t child = go(node, b);
            if (child < 0) {
                child = static_cast<int32_t>(nodes_.size());
                edges_.emplace(edge_key(node, b), child);
                nodes_.push_back(Node{-1, 0, -1, nodes_[node].depth + 1, node, b});
            }
            node = child;
        }
        nodes_[node].id = id;
    }
    bool empty() const { return nodes_.size() == 1; }

    // Failure links and, per node, the deepest token node on its failure chain. Call
    // once after the last add().
    void build() {
        // Breadth-first (by depth): a failure link always points to a shallower node.
        std::vector<int32_t> order(nodes_.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t a, int32_t b) { return nodes_[a].depth < nodes_[b].depth; });
        for (int32_t v : order) {
            if (v == 0) continue;
            Node &n = nodes_[v];
            int32_t f = nodes_[n.parent].fail, g = -1;
            for (;;) {
                g = go(f, n.byte);
                if ((g >= 0 && g != v) || f == 0) break;
                f = nodes_[f].fail;
            }
            n.fail = g >= 0 && g != v ? g : 0;
            n.out = n.id >= 0 ? v : nodes_[n.fail].out;
        }
    }

    // longest[p]: the node of the longest token starting at text[p], or -1.
    void longest_at(std::string_view text, std::vector<int32_t> &longest) const {
        longest.assign(text.size(), -1);
        int32_t state = 0;
        for (size_t p = text.size(); p-- > 0;) {
            const unsigned char b = static_cast<unsigned char>(text[p]);
            for (;;) {
                const int32_t g = go(state, b);
                if (g >= 0) {
                    state = g;
                    break;
                }
                if (state == 0) break;
                state = nodes_[state].fail;
            }
            longest[p] = nodes_[state].out;
        }
    }

    // The next match at or after `from`, given longest_at() of the text: sets [start, end)
    // and the token id.
    bool next(const std::vector<int32_t> &longest, size_t from, size_t &start, size_t &end, int32_t &id) const {
        for (size_t i = from; i < longest.size(); ++i) {
            if (longest[i] < 0) continue;
            const Node &n = nodes_[longest[i]];
            start = i;
            end = i + n.depth;
            id = n.id;
            return true;
        }
        return false;
    }

private:
    struct Node {
        int32_t id = -1;       // token ending here (reversed: starting here), or -1
        int32_t fail = 0;      // longest proper suffix that is also in the trie
        int32_t out = -1;      // deepest node with a token on the failure chain, self included
        uint32_t depth = 0;    // bytes from the root
        int32_t parent = 0;
        unsigned char byte = 0;  // on the edge from the parent
    };
    static uint64_t edge_key(int32_t node, unsigned char b) { return (uint64_t(uint32_t(node)) << 8) | b; }
    int32_t go(int32_t node, unsigned char b) const {
        auto it = edges_.find(edge_key(node, b));
        return it == edges_.end() ? -1 : it->second;
    }

    std::vector<Node> nodes_;
    std::unordered_map<uint64_t, int32_t> edges_;
};

// ===================================================================================
// Pre-tokenizer
// ===================================================================================

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// One pre-tokenizer: optionally prepend a space (ByteLevel add_prefix_space), then optionally
// split each piece on a regex. Split, Digits and ByteLevel all reduce to this.
struct PreStep {
    bool prepend_space = false;
    std::unique_ptr<Regex> regex;
    Behavior behavior = Behavior::Isolated;
    bool invert = false;
};

struct Span {
    size_t begin, end;
    bool match;  // a regex match; after apply_behavior: the piece is removed
};

// The whole piece as alternating non-match / match spans, with Oniguruma's iteration rule for
// empty matches: one that ends where the previous match ended is skipped and the search
// resumes one character further on.
void find_spans(const Regex &re, std::string_view s, MatchScratch &m, std::vector<Span> &out) {
    out.clear();
    size_t prev = 0, pos = 0, last_end = 0;
    bool any = false;
    size_t b, e;
    while (pos <= s.size() && re.find(s, pos, m, b, e)) {
        if (b == e && any && last_end == e) {
            pos += pos < s.size() ? char_len(s, pos) : 1;
            continue;
        }
        pos = last_end = e;
        any = true;
        if (prev != b) out.push_back({prev, b, false});
        out.push_back({b, e, true});
        prev = e;
    }
    if (prev != s.size()) out.push_back({prev, s.size(), false});
}

// Applies a SplitDelimiterBehavior in place: spans -> pieces, `match` now meaning "removed".
void apply_behavior(Behavior behavior, std::vector<Span> &spans) {
    size_t w = 0;
    bool prev_match = false;
    switch (behavior) {
    case Behavior::Removed:
        return;
    case Behavior::Isolated:
        for (Span &s : spans) s.match = false;
        return;
    case Behavior::Contiguous:
    case Behavior::MergedWithPrevious:
        for (const Span &s : spans) {
            bool merge = behavior == Behavior::Contiguous ? s.match == prev_match : s.match && !prev_match;
            prev_match = s.match;
            if (merge && w > 0) spans[w - 1].end = s.end;
            else spans[w++] = {s.begin, s.end, false};
        }
        spans.resize(w);
        return;
    case Behavior::MergedWithNext:
        // Mirror image of MergedWithPrevious: walk from the right, compacting to the right.
        w = spans.size();
        for (size_t r = spans.size(); r-- > 0;) {
            Span s = spans[r];
            bool merge = s.match && !prev_match;
            prev_match = s.match;
            if (merge && w < spans.size()) spans[w].begin = s.begin;
            else spans[--w] = {s.begin, s.end, false};
        }
        spans.erase(spans.begin(), spans.begin() + w);
        return;
    }
}

// ===================================================================================
// Encoding state (one per encode call: nothing mutable lives in the tokenizer)
// ===================================================================================

struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
};

struct QueuedMerge {
    uint64_t order;  // rank << 32 | position: lowest rank first, then leftmost
    int32_t new_id;
    // std::*_heap keeps the largest on top.
    bool operator<(const QueuedMerge &o) const { return order > o.order; }
    uint32_t pos() const { return static_cast<uint32_t>(order); }
};

struct EncodeState {
    explicit EncodeState(size_t n_steps, std::vector<int32_t> &out) : spans(n_steps), out(out) {}
    MatchScratch match;
    std::vector<std::vector<Span>> spans;  // per pre-tokenizer step
    std::deque<std::string> prefixed;      // pieces given a leading space (stable addresses)
    std::vector<Symbol> symbols;
    std::vector<QueuedMerge> queue;
    std::string mapped;
    // Text repeats its words, and merging is the costly part: remember each short piece's
    // ids for the rest of this call. Keys view the input or `prefixed`, which outlive it.
    std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> seen;  // -> [begin, end) in seen_ids
    std::vector<int32_t> seen_ids;
    std::vector<int32_t> &out;
};

constexpr size_t kMaxRememberedPiece = 64;       // bytes
constexpr size_t kMaxRememberedPieces = 1 << 16;

}  // namespace

// ===================================================================================
// The tokenizer
// ===================================================================================

struct Tokenizer::Impl {
    std::string origin;

    // BPE model
    std::deque<std::string> vocab_text;                      // owns the keys of `vocab`
    std::unordered_map<std::string_view, int32_t> vocab;     // token text -> id
    PairMap merges;
    bool byte_level = false;  // the last pre-tokenizer is ByteLevel: pieces are raw bytes
    bool ignore_merges = false;
    bool byte_fallback = false;
    bool fuse_unk = false;
    int32_t unk_id = -1;
    std::array<int32_t, 256> byte_ids{};  // byte-level: id of each byte's character, or -1

    std::vector<PreStep> steps;

    // Added tokens
    std::unordered_map<std::string, int32_t> added_ids;
    std::unordered_map<int32_t, AddedToken> added_by_id;
    TokenMatcher raw_matcher;         // normalized=false tokens, matched on the input
    TokenMatcher normalized_matcher;  // normalized=true tokens, matched on normalized pieces
    // `tokenizers` tests single_word/lstrip/rstrip with Rust regex's \w and \s.
    std::unique_ptr<Regex> word_char, space_char;

    // add_special: the ids the post_processor's template puts before and after the text.
    std::vector<int32_t> prefix_ids, suffix_ids;
    std::string unsupported_post_processor;  // a type whose ids are not known; "" if none

    // Decoding: the bytes of every id, concatenated
    std::string decoded;
    std::vector<uint32_t> decoded_at;  // n_vocab + 1 offsets
    int32_t n_vocab = 0;

    [[noreturn]] void bad(const char *fmt, const std::string &a = "", const std::string &b = "") const;
    bool flag(const json &obj, const char *key, bool fallback, const std::string &where) const;

    void load(const json &root);
    void load_normalizer(const json &j, const std::string &where) const;
    void load_pre_tokenizer(const json &j, const std::string &where);
    PreStep split_step(const json &j, const std::string &where) const;
    void load_decoder(const json &j) const;
    void load_model(const json &model);
    void load_vocab(const json &v);
    void load_merges(const json &m);
    void load_added_tokens(const json &list);
    void load_post_processor(const json &j, const std::string &where);
    void load_tokenizer_config(const std::string &text, const std::string &path);
    void build_decoder_table();

    void split_added(std::string_view text, EncodeState &st) const;
    void find_added(std::string_view text, const TokenMatcher &matcher, MatchScratch &m,
                    std::vector<std::pair<Span, int32_t>> &out) const;
    void pre_tokenize(size_t step, std::string_view piece, EncodeState &st) const;
    void bpe(std::string_view piece, EncodeState &st) const;
    void merge_word(std::string_view piece, EncodeState &st) const;
};

namespace {

std::string type_of(const json &j, const std::string &where, const std::string &origin) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
        fail(DSI_ERR_FORMAT, "%s: %s has no \"type\"", origin.c_str(), where.c_str());
    return j["type"].get<std::string>();
}

// `tokenizers`' ByteLevel regex (GPT-2's), compiled like a file's Oniguruma pattern.
const char *const kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

}  // namespace

void Tokenizer::Impl::bad(const char *fmt, const std::string &a, const std::string &b) const {
    std::string msg = origin + ": " + strformat(fmt, a.c_str(), b.c_str());
    throw Error(DSI_ERR_FORMAT, msg);
}

bool Tokenizer::Impl::flag(const json &obj, const char *key, bool fallback, const std::string &where) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) bad("%s.%s must be true or false", where, key);
    return it->get<bool>();
}

void Tokenizer::Impl::load_normalizer(const json &j, const std::string &where) const {
    if (j.is_null()) return;
    std::string type = type_of(j, where, origin);
    if (type != "Sequence") bad("%s type \"%s\" is not supported (only null or an empty Sequence)", where, type);
    const json &list = j.value("normalizers", json());
    if (!list.is_array()) bad("%s.normalizers must be an array", where);
    for (size_t i = 0; i < list.size(); ++i) load_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]");
}

void Tokenizer::Impl::load_pre_tokenizer(const json &j, const std::string &where) {
    if (j.is_null()) return;
    std::string type = type_of(j, where, origin);
    // Pieces reach the model as raw bytes (see bpe), so no step may see ByteLevel's output.
    if (byte_level) bad("%s: nothing may follow the ByteLevel pre-tokenizer", where);
    if (type == "Sequence") {
        const json &list = j.value("pretokenizers", json());
        if (!list.is_array()) bad("%s.pretokenizers must be an array", where);
        for (size_t i = 0; i < list.size(); ++i)
            load_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]");
        return;
    }
    PreStep step;
    if (type == "Split") {
        step = split_step(j, where);
    } else if (type == "Digits") {
        // `char::is_numeric`: general category N. Each digit is its own match.
        step.regex = std::make_unique<Regex>("\\p{N}", Regex::Syntax::Pcre2, origin + ": " + where);
        step.behavior = flag(j, "individual_digits", false, where) ? Behavior::Isolated : Behavior::Contiguous;
    } else if (type == "ByteLevel") {
        step.prepend_space = flag(j, "add_prefix_space", true, where);
        if (flag(j, "use_regex", true, where))
            step.regex = std::make_unique<Regex>(kGpt2Pattern, Regex::Syntax::Oniguruma, origin + ": " + where);
        byte_level = true;
    } else {
        bad("%s type \"%s\" is not supported (only Sequence, Split, Digits, ByteLevel)", where, type);
    }
    steps.push_back(std::move(step));
}

PreStep Tokenizer::Impl::split_step(const json &j, const std::string &where) const {
    const json &pattern = j.value("pattern", json());
    bool literal = pattern.is_object() && pattern.contains("String") && pattern["String"].is_string();
    bool regex = pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string();
    if (!literal && !regex) bad("%s.pattern must be {\"Regex\": ...} or {\"String\": ...}", where);
    PreStep step;
    step.regex = std::make_unique<Regex>(pattern[literal ? "String" : "Regex"].get<std::string>(),
                                         literal ? Regex::Syntax::Literal : Regex::Syntax::Oniguruma,
                                         origin + ": " + where);
    static const std::pair<const char *, Behavior> behaviors[] = {
        {"Removed", Behavior::Removed},
        {"Isolated", Behavior::Isolated},
        {"MergedWithPrevious", Behavior::MergedWithPrevious},
        {"MergedWithNext", Behavior::MergedWithNext},
        {"Contiguous", Behavior::Contiguous}};
    std::string name = j.value("behavior", json()).is_string() ? j["behavior"].get<std::string>() : "";
    auto it = std::find_if(std::begin(behaviors), std::end(behaviors), [&](const auto &b) { return name == b.first; });
    if (it == std::end(behaviors)) bad("%s.behavior \"%s\" is not a split behavior", where, name);
    step.behavior = it->second;
    step.invert = flag(j, "invert", false, where);
    return step;
}

void Tokenizer::Impl::load_decoder(const json &j) const {
    if (j.is_null()) bad("decoder is null; only the ByteLevel decoder is supported");
    std::string type = type_of(j, "decoder", origin);
    if (type != "ByteLevel") bad("decoder type \"%s\" is not supported (only ByteLevel)", type);
}

void Tokenizer::Impl::load_vocab(const json &v) {
    if (!v.is_object()) bad("model.vocab must be an object");
    vocab.reserve(v.size());
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
            it.value().get<int64_t>() > INT32_MAX - 1)
            bad("model.vocab[\"%s\"] must be an id in [0, 2^31-1)", it.key());
        int32_t id = static_cast<int32_t>(it.value().get<int64_t>());
        std::string_view key = vocab_text.emplace_back(it.key());
        vocab[key] = id;
    }
}

void Tokenizer::Impl::load_merges(const json &m) {
    if (!m.is_array()) bad("model.merges must be an array");
    merges.reserve(m.size());
    uint32_t rank = 0;
    std::string merged;
    for (size_t i = 0; i < m.size(); ++i) {
        const json &e = m[i];
        auto where = [i] { return "model.merges[" + std::to_string(i) + "]"; };  // only for errors
        std::string_view a, b;
        if (e.is_string()) {
            std::string_view line = e.get_ref<const std::string &>();
            if (line.substr(0, 8) == "#version") continue;  // a merges.txt header line
            size_t sp = line.find(' ');
            if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
                bad("%s \"%s\" is not two tokens separated by one space", where(), std::string(line));
            a = line.substr(0, sp);
            b = line.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
            a = e[0].get_ref<const std::string &>();
            b = e[1].get_ref<const std::string &>();
        } else {
            bad("%s must be \"a b\" or [\"a\", \"b\"]", where());
        }
        auto find = [&](std::string_view t) {
            auto it = vocab.find(t);
            if (it == vocab.end()) bad("%s names token \"%s\", which is not in model.vocab", where(), std::string(t));
            return it->second;
        };
        merged.assign(a).append(b);
        int32_t ia = find(a), ib = find(b), im = find(merged);
        merges.set(ia, ib, Merge{rank++, im});
    }
}

void Tokenizer::Impl::load_model(const json &model) {
    if (!model.is_object()) bad("\"model\" must be an object");
    if (model.contains("type")) {
        if (!model["type"].is_string()) bad("model.type must be a string");
        std::string type = model["type"].get<std::string>();
        if (type != "BPE") bad("model type \"%s\" is not supported (only BPE)", type);
    }
    if (!model.contains("vocab")) bad("model has no \"vocab\"");
    if (!model.contains("merges")) bad("model has no \"merges\"");
    const json &dropout = model.value("dropout", json());
    if (!dropout.is_null() && !(dropout.is_number() && dropout.get<double>() == 0.0))
        bad("model.dropout is not supported (encoding would be random)");
    for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (!model.value(key, json()).is_null()) bad("model.%s is not supported", key);
    ignore_merges = flag(model, "ignore_merges", false, "model");
    byte_fallback = flag(model, "byte_fallback", false, "model");
    fuse_unk = flag(model, "fuse_unk", false, "model");

    load_vocab(model["vocab"]);
    load_merges(model["merges"]);

    const json &unk = model.value("unk_token", json());
    if (!unk.is_null()) {
        if (!unk.is_string()) bad("model.unk_token must be a string");
        auto it = vocab.find(unk.get<std::string>());
        if (it == vocab.end()) bad("model.unk_token \"%s\" is not in model.vocab", unk.get<std::string>());
        unk_id = it->second;
    }
    for (int b = 0; b < 256; ++b) {
        auto it = vocab.find(byte_alphabet().utf8_of(static_cast<uint8_t>(b)));
        byte_ids[b] = it == vocab.end() ? -1 : it->second;
    }
}

// Ids as `tokenizers` assigns them when deserializing: the "id" field is only checked by it,
// not used. An added token takes its vocabulary id if it has one, else the next free id.
void Tokenizer::Impl::load_added_tokens(const json &list) {
    if (list.is_null()) return;
    if (!list.is_array()) bad("added_tokens must be an array");
    const int64_t model_size = static_cast<int64_t>(vocab.size());
    int64_t max_id = -1;  // the highest id in added_by_id, kept as tokens are added (linear load)
    for (size_t i = 0; i < list.size(); ++i) {
        const json &j = list[i];
        std::string where = "added_tokens[" + std::to_string(i) + "]";
        if (!j.is_object() || !j.contains("content") || !j["content"].is_string())
            bad("%s has no \"content\" string", where);
        AddedToken t;
        t.content = j["content"].get<std::string>();
        t.single_word = flag(j, "single_word", false, where);
        t.lstrip = flag(j, "lstrip", false, where);
        t.rstrip = flag(j, "rstrip", false, where);
        t.normalized = flag(j, "normalized", true, where);
        t.special = flag(j, "special", false, where);
        if (t.content.empty()) continue;
        auto known = added_ids.find(t.content);
        if (known != added_ids.end() && added_by_id[known->second] == t) continue;

        int32_t id;
        if (known != added_ids.end()) {
            id = known->second;
        } else if (auto v = vocab.find(t.content); v != vocab.end()) {
            id = v->second;
        } else {
            int64_t next = max_id < 0 ? model_size : (max_id >= model_size || model_size == 0) ? max_id + 1 : model_size;
            if (next > INT32_MAX - 1) bad("%s: too many tokens", where);
            id = static_cast<int32_t>(next);
        }
        added_ids[t.content] = id;
        added_by_id[id] = t;
        max_id = std::max<int64_t>(max_id, id);
    }
    for (const auto &[id, t] : added_by_id) (t.normalized ? normalized_matcher : raw_matcher).add(t.content, id);
    normalized_matcher.build();
    raw_matcher.build();
    word_char = std::make_unique<Regex>("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]", Regex::Syntax::Pcre2,
                                        "word character class");
    space_char = std::make_unique<Regex>("\\p{White_Space}", Regex::Syntax::Pcre2, "space character class");
}

// The bytes of every id through the ByteLevel decoder; an added token's content wins over a
// vocabulary entry with the same id, as in `tokenizers`' decode.
void Tokenizer::Impl::build_decoder_table() {
    int64_t top = -1;
    for (const auto &kv : vocab) top = std::max<int64_t>(top, kv.second);
    for (const auto &kv : added_by_id) top = std::max<int64_t>(top, kv.first);
    // Tables are indexed by id, so a sparse id such as 1e9 would cost gigabytes: ids may
    // leave gaps, but no more unused ids than tokens (plus some slack for tiny files).
    const int64_t defined = static_cast<int64_t>(vocab.size() + added_by_id.size());
    if (top + 1 > 2 * defined + 1024)
        bad("%s", strformat("the highest token id is %lld but only %lld tokens are defined: ids must be "
                            "numbered densely from 0 (at most %lld ids)",
                            (long long)top, (long long)defined, (long long)(2 * defined + 1024)));
    n_vocab = static_cast<int32_t>(top + 1);
    std::vector<std::string_view> text_of(static_cast<size_t>(n_vocab));
    for (const auto &[text, id] : vocab) text_of[id] = text;
    for (const auto &[id, t] : added_by_id) text_of[id] = t.content;

    decoded_at.assign(static_cast<size_t>(n_vocab) + 1, 0);
    for (int32_t id = 0; id < n_vocab; ++id) {
        decoded_at[id] = static_cast<uint32_t>(decoded.size());
        decoded += byte_alphabet().decode_token(text_of[id]);
        if (decoded.size() > UINT32_MAX) bad("the vocabulary is too large");
    }
    decoded_at[n_vocab] = static_cast<uint32_t>(decoded.size());
}

void Tokenizer::Impl::load(const json &root) {
    if (!root.is_object()) bad("the top level is not a JSON object");
    if (!root.contains("model")) bad("missing \"model\"");
    load_model(root["model"]);
    load_normalizer(root.value("normalizer", json()), "normalizer");
    load_pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer");
    load_decoder(root.value("decoder", json()));
    load_added_tokens(root.value("added_tokens", json()));
    load_post_processor(root.value("post_processor", json()), "post_processor");
    build_decoder_table();
}

// TemplateProcessing's "single" template: SpecialToken items (their ids from
// "special_tokens") around one Sequence item, the text. Processors that change no ids
// (ByteLevel) are skipped; any other type is remembered so that add_special can refuse it.
void Tokenizer::Impl::load_post_processor(const json &j, const std::string &where) {
    if (j.is_null()) return;
    const std::string type = type_of(j, where, origin);
    if (type == "Sequence") {
        const json &list = j.value("processors", json());
        if (!list.is_array()) bad("%s.processors must be an array", where);
        for (size_t i = 0; i < list.size(); ++i)
            load_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]");
        return;
    }
    if (type == "ByteLevel") return;
    if (type != "TemplateProcessing") {
        unsupported_post_processor = type;
        return;
    }
    const json &single = j.value("single", json());
    const json &specials = j.value("special_tokens", json::object());
    if (!single.is_array() || !specials.is_object()) bad("%s needs a \"single\" array and \"special_tokens\"", where);
    bool text_seen = false;
    for (const json &item : single) {
        if (item.contains("Sequence")) {
            text_seen = true;
            continue;
        }
        const json &special = item.value("SpecialToken", json());
        if (!special.is_object() || !special.contains("id") || !special["id"].is_string())
            bad("%s.single has an item that is neither Sequence nor SpecialToken", where);
        const std::string name = special["id"].get<std::string>();
        const json &entry = specials.value(name, json());
        if (!entry.is_object() || !entry.contains("ids") || !entry["ids"].is_array())
            bad("%s.special_tokens has no ids for '%s'", where, name);
        for (const json &id : entry["ids"]) {
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
                bad("%s.special_tokens['%s'] has an invalid id", where, name);
            (text_seen ? suffix_ids : prefix_ids).push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
    }
}

// ---- encoding ---------------------------------------------------------------------

// `tokenizers`' AddedVocabulary::find_matches: leftmost-longest matches, then each token's
// single_word / lstrip / rstrip options. Matches skipped for single_word still consume text.
void Tokenizer::Impl::find_added(std::string_view text, const TokenMatcher &matcher, MatchScratch &m,
                                 std::vector<std::pair<Span, int32_t>> &out) const {
    auto char_before = [&](size_t i) {
        size_t k = i - 1;
        while (k > 0 && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
        return text.substr(k, i - k);
    };
    auto char_at = [&](size_t i) { return text.substr(i, char_len(text, i)); };

    out.clear();
    size_t done = 0, from = 0, start = 0, stop = 0;
    int32_t id = -1;
    std::vector<int32_t> longest;
    if (!matcher.empty()) matcher.longest_at(text, longest);
    while (matcher.next(longest, from, start, stop, id)) {
        from = stop;
        const AddedToken &t = added_by_id.at(id);
        if (t.single_word) {
            bool word_before = start > 0 && word_char->matches_char(char_before(start), m);
            bool word_after = stop < text.size() && word_char->matches_char(char_at(stop), m);
            if (word_before || word_after) continue;
        }
        if (t.lstrip) {
            size_t s = start;
            while (s > 0 && space_char->matches_char(char_before(s), m)) s -= char_before(s).size();
            start = std::max(s, done);  // an earlier rstrip may already own those spaces
        }
        if (t.rstrip) {
            while (stop < text.size() && space_char->matches_char(char_at(stop), m)) stop += char_len(text, stop);
        }
        if (done < start) out.push_back({{done, start, false}, -1});
        out.push_back({{start, stop, true}, id});
        done = stop;
    }
    if (done < text.size()) out.push_back({{done, text.size(), false}, -1});
}

void Tokenizer::Impl::split_added(std::string_view text, EncodeState &st) const {
    std::vector<std::pair<Span, int32_t>> outer, inner;
    find_added(text, raw_matcher, st.match, outer);
    for (const auto &[span, id] : outer) {
        if (id >= 0) {
            st.out.push_back(id);
            continue;
        }
        // The normalizer is the identity (anything else is refused at load), so the
        // normalized tokens are matched on the same bytes.
        std::string_view piece = text.substr(span.begin, span.end - span.begin);
        find_added(piece, normalized_matcher, st.match, inner);
        for (const auto &[s, nid] : inner) {
            if (nid >= 0) st.out.push_back(nid);
            else pre_tokenize(0, piece.substr(s.begin, s.end - s.begin), st);
        }
    }
}

void Tokenizer::Impl::pre_tokenize(size_t step, std::string_view piece, EncodeState &st) const {
    if (step == steps.size()) {
        bpe(piece, st);
        return;
    }
    const PreStep &s = steps[step];
    if (s.prepend_space && piece[0] != ' ') piece = st.prefixed.emplace_back(" " + std::string(piece));
    if (!s.regex) {
        pre_tokenize(step + 1, piece, st);
        return;
    }
    std::vector<Span> &spans = st.spans[step];
    find_spans(*s.regex, piece, st.match, spans);
    if (s.invert)
        for (Span &sp : spans) sp.match = !sp.match;
    apply_behavior(s.behavior, spans);
    for (const Span &sp : spans)
        if (!sp.match && sp.end > sp.begin) pre_tokenize(step + 1, piece.substr(sp.begin, sp.end - sp.begin), st);
}

void Tokenizer::Impl::bpe(std::string_view piece, EncodeState &st) const {
    const bool remember = piece.size() <= kMaxRememberedPiece;
    if (remember) {
        auto it = st.seen.find(piece);
        if (it != st.seen.end()) {
            st.out.insert(st.out.end(), st.seen_ids.begin() + it->second.first, st.seen_ids.begin() + it->second.second);
            return;
        }
    }
    size_t first = st.out.size();
    merge_word(piece, st);
    if (remember && st.seen.size() < kMaxRememberedPieces) {
        uint32_t begin = static_cast<uint32_t>(st.seen_ids.size());
        st.seen_ids.insert(st.seen_ids.end(), st.out.begin() + first, st.out.end());
        st.seen.emplace(piece, std::make_pair(begin, static_cast<uint32_t>(st.seen_ids.size())));
    }
}

// `tokenizers`' BPE::merge_word + Word::merge_all: one symbol per character (byte-level: per
// byte), then repeatedly apply the lowest-ranked merge, leftmost first, through a heap over a
// linked list of symbols.
void Tokenizer::Impl::merge_word(std::string_view piece, EncodeState &st) const {
    const ByteAlphabet &alphabet = byte_alphabet();
    if (ignore_merges) {
        std::string_view key = piece;
        if (byte_level) {
            st.mapped.clear();
            for (unsigned char b : piece) append_code_point(st.mapped, alphabet.char_of[b]);
            key = st.mapped;
        }
        auto it = vocab.find(key);
        if (it != vocab.end()) {
            st.out.push_back(it->second);
            return;
        }
    }

    std::vector<Symbol> &sym = st.symbols;
    sym.clear();
    auto add = [&](int32_t id) { sym.push_back({id, int32_t(sym.size()) - 1, int32_t(sym.size()) + 1, true}); };
    int32_t pending_unk = -1;  // an unknown character waiting for fuse_unk to see the next one
    std::string byte_char;
    for (size_t i = 0; i < piece.size();) {
        size_t len = byte_level ? 1 : char_len(piece, i);
        std::string_view ch = piece.substr(i, len);
        i += len;
        int32_t id = -1;
        if (byte_level) {
            id = byte_ids[static_cast<unsigned char>(ch[0])];
            if (id < 0) ch = byte_char = alphabet.utf8_of(static_cast<unsigned char>(ch[0]));
        } else if (auto it = vocab.find(ch); it != vocab.end()) {
            id = it->second;
        }
        if (id >= 0) {
            if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
            add(id);
            continue;
        }
        if (byte_fallback) {
            std::vector<int32_t> fallback;
            for (unsigned char b : ch) {
                auto it = vocab.find(strformat("<0x%02X>", b));
                if (it == vocab.end()) break;
                fallback.push_back(it->second);
            }
            if (fallback.size() == ch.size()) {
                for (int32_t f : fallback) add(f);
                continue;
            }
        }
        if (unk_id >= 0) {
            if (pending_unk >= 0 && !fuse_unk) add(pending_unk);
            pending_unk = unk_id;
        }
        // With neither fallback nor unk_token the character is dropped, as in `tokenizers`.
    }
    if (pending_unk >= 0) add(pending_unk);
    if (sym.empty()) return;
    sym.back().next = -1;

    std::vector<QueuedMerge> &queue = st.queue;
    queue.clear();
    auto push = [&](size_t pos, const Merge *m) {
        queue.push_back({(uint64_t(m->rank) << 32) | pos, m->new_id});
        std::push_heap(queue.begin(), queue.end());
    };
    for (size_t i = 0; i + 1 < sym.size(); ++i)
        if (const Merge *m = merges.get(sym[i].id, sym[i + 1].id)) push(i, m);

    while (!queue.empty()) {
        std::pop_heap(queue.begin(), queue.end());
        QueuedMerge top = queue.back();
        queue.pop_back();
        const uint32_t pos = top.pos();
        Symbol &left = sym[pos];
        if (!left.alive || left.next < 0) continue;
        Symbol &right = sym[left.next];
        const Merge *current = merges.get(left.id, right.id);
        if (!current || current->new_id != top.new_id) continue;  // stale entry

        left.id = top.new_id;
        right.alive = false;
        left.next = right.next;
        if (left.next >= 0) sym[left.next].prev = static_cast<int32_t>(pos);
        if (left.prev >= 0)
            if (const Merge *m = merges.get(sym[left.prev].id, left.id)) push(left.prev, m);
        if (left.next >= 0)
            if (const Merge *m = merges.get(left.id, sym[left.next].id)) push(pos, m);
    }
    for (const Symbol &s : sym)
        if (s.alive) st.out.push_back(s.id);
}

// ===================================================================================
// Public interface
// ===================================================================================

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load_json(const std::string &text, const std::string &origin) {
    if (std::string problem = json_text_problem(text); !problem.empty())
        fail(DSI_ERR_FORMAT, "%s: %s", origin.c_str(), problem.c_str());
    json root;
    try {
        root = json::parse(text);
    } catch (const json::exception &e) {  // parse_error, or out_of_range for a number overflow
        fail(DSI_ERR_FORMAT, "%s: not valid JSON: %s", origin.c_str(), e.what());
    }
    auto impl = std::make_unique<Impl>();
    impl->origin = origin;
    try {
        impl->load(root);
    } catch (const json::exception &e) {
        // A field of the wrong JSON type that the checks above did not anticipate.
        fail(DSI_ERR_FORMAT, "%s: unexpected content: %s", origin.c_str(), e.what());
    }
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::unique_ptr<Tokenizer> Tokenizer::load_file(const std::string &path) {
    std::unique_ptr<Tokenizer> tok = load_json(read_text_file(path, "tokenizer file"), path);
    const size_t slash = path.find_last_of('/');
    const std::string config = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
                               "tokenizer_config.json";
    if (is_regular_file(config)) tok->impl_->load_tokenizer_config(read_text_file(config, "tokenizer config"), config);
    return tok;
}

// transformers' Llama-style fast tokenizers (DeepSeek's among them) rebuild the
// post_processor from tokenizer_config.json's add_bos_token / add_eos_token: when either
// key is present, BOS and/or EOS are what add_special puts around the text.
void Tokenizer::Impl::load_tokenizer_config(const std::string &text, const std::string &path) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception &e) {  // parse_error, or out_of_range for a number overflow
        fail(DSI_ERR_FORMAT, "%s: not valid JSON: %s", path.c_str(), e.what());
    }
    if (!j.is_object() || (!j.contains("add_bos_token") && !j.contains("add_eos_token"))) return;
    const auto id_of = [&](const char *key) {
        const json &v = j.value(key, json());
        const json &content = v.is_object() ? v.value("content", json()) : v;
        if (!content.is_string()) fail(DSI_ERR_FORMAT, "%s: %s is not a token text", path.c_str(), key);
        auto it = added_ids.find(content.get<std::string>());
        if (it == added_ids.end())
            fail(DSI_ERR_FORMAT, "%s: %s '%s' is not an added token", path.c_str(), key,
                 content.get<std::string>().c_str());
        return it->second;
    };
    const auto enabled = [&](const char *key) {
        const json &v = j.value(key, json());
        if (!v.is_null() && !v.is_boolean()) fail(DSI_ERR_FORMAT, "%s: %s must be true or false", path.c_str(), key);
        return v.is_boolean() && v.get<bool>();
    };
    prefix_ids.clear();
    suffix_ids.clear();
    unsupported_post_processor.clear();
    if (enabled("add_bos_token")) prefix_ids.push_back(id_of("bos_token"));
    if (enabled("add_eos_token")) suffix_ids.push_back(id_of("eos_token"));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special, bool add_special) const {
    if (add_special && !impl_->unsupported_post_processor.empty())
        fail(DSI_ERR_UNSUPPORTED, "add_special: the tokenizer's post_processor type %s is not supported",
             impl_->unsupported_post_processor.c_str());
    size_t bad = utf8::find_invalid(text);
    if (bad != std::string_view::npos)
        fail(DSI_ERR_PARSE, "text to encode is not valid UTF-8: bad byte 0x%02X at byte offset %zu",
             static_cast<unsigned char>(text[bad]), bad);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 1);
    if (add_special) out = impl_->prefix_ids;
    EncodeState st(impl_->steps.size(), out);
    if (parse_special) impl_->split_added(text, st);
    else if (!text.empty()) impl_->pre_tokenize(0, text, st);
    if (add_special) out.insert(out.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
    return out;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
    if (id < 0 || id >= impl_->n_vocab)
        fail(DSI_ERR_INVALID_TOKEN, "token id %d is outside [0, %d)", id, impl_->n_vocab);
    uint32_t b = impl_->decoded_at[id], e = impl_->decoded_at[id + 1];
    return std::string_view(impl_->decoded).substr(b, e - b);
}

std::string Tokenizer::decode(const int32_t *ids, size_t n, bool skip_special) const {
    std::string bytes;
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= impl_->n_vocab)
            fail(DSI_ERR_INVALID_TOKEN, "token id %d at position %zu is outside [0, %d)", ids[i], i, impl_->n_vocab);
        if (skip_special && kind(ids[i]) == TokenKind::Special) continue;
        bytes += token_bytes(ids[i]);
    }
    if (utf8::find_invalid(bytes) == std::string_view::npos) return bytes;
    std::string text;
    utf8::append_lossy(text, bytes);
    return text;
}

int32_t Tokenizer::n_vocab() const { return impl_->n_vocab; }

TokenKind Tokenizer::kind(int32_t id) const {
    if (id < 0 || id >= impl_->n_vocab) return TokenKind::None;
    auto added = impl_->added_by_id.find(id);
    if (added != impl_->added_by_id.end()) return added->second.special ? TokenKind::Special : TokenKind::Added;
    return impl_->decoded_at[id] == impl_->decoded_at[id + 1] ? TokenKind::None : TokenKind::Normal;
}

int32_t Tokenizer::token_id(std::string_view text) const {
    auto added = impl_->added_ids.find(std::string(text));
    if (added != impl_->added_ids.end()) return added->second;
    auto it = impl_->vocab.find(text);
    return it == impl_->vocab.end() ? -1 : it->second;
}

}  // namespace dsi
