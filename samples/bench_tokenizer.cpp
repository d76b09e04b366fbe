// Tokenizer throughput: encodes about 1 MB of mixed text (English prose, Python code, CJK,
// emoji) several times on one thread through the public C API and prints MB/s.
//
//   bench_tokenizer [TOKENIZER_JSON] [ITERATIONS]
//
// TOKENIZER_JSON defaults to $DSI_DEEPSEEK_TOKENIZER (scripts/fetch_tokenizer.sh fetches the
// DeepSeek-V3 one). The text is the same on every run, so numbers are comparable.
#include "dsinfer.h"

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

namespace {

// A fixed-seed generator, so that every run encodes the same text.
class Lcg {
public:
    uint32_t next() { return (state_ = state_ * 1664525u + 1013904223u) >> 8; }
    size_t below(size_t n) { return next() % n; }
    template <size_t N>
    const char *pick(const char *const (&list)[N]) { return list[below(N)]; }

private:
    uint32_t state_ = 12345;
};

const char *const kWords[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
    "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
    "who", "so", "no", "model", "attention", "sparse", "memory", "token", "layer", "expert", "inference",
    "throughput", "latency", "benchmark", "measured", "carefully", "although", "however", "government",
    "university", "research", "between", "through", "during", "without", "important", "different", "system",
    "example", "because", "question", "understanding", "international", "development", "community"};
const char *const kSyllables[] = {"ka", "lo", "mi", "zen", "tor", "qua", "ix", "bel", "dra", "fin", "gu", "hob",
                                  "jar", "ny", "pex", "rud", "sol", "vik", "wem", "yul"};
const char *const kPunct[] = {".", ".", ".", "?", "!", ";", ":", ","};
const char *const kEmoji[] = {"😀", "🎉", "👍🏽", "🇨🇳", "🇺🇸", "👨‍👩‍👧", "❤️", "🚀", "🤖", "🔥", "✨", "🙏🏻", "🧠", "📈"};
const char *const kKana[] = {"の", "に", "は", "を", "た", "が", "で", "て", "と", "し", "カ", "タ", "ナ", "ー", "ス"};

void append_code_point(std::string &s, uint32_t cp) {
    if (cp < 0x800) {
        s += char(0xC0 | (cp >> 6));
    } else {
        s += char(0xE0 | (cp >> 12));
        s += char(0x80 | ((cp >> 6) & 0x3F));
    }
    s += char(0x80 | (cp & 0x3F));
}

// A made-up word or identifier: text that a tokenizer has not seen a thousand times.
std::string coined(Lcg &rng) {
    std::string w;
    for (size_t n = 2 + rng.below(3); n > 0; --n) w += rng.pick(kSyllables);
    return w;
}

void prose(Lcg &rng, std::string &out) {
    for (size_t sentences = 3 + rng.below(4); sentences > 0; --sentences) {
        for (size_t n = 6 + rng.below(14), i = 0; i < n; ++i) {
            if (i > 0) out += ' ';
            size_t kind = rng.below(20);
            std::string w = kind == 0 ? std::to_string(rng.below(1000000)) : kind == 1 ? coined(rng) : rng.pick(kWords);
            if (i == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
            out += w;
            if (i + 1 < n && rng.below(8) == 0) out += ',';
        }
        out += rng.pick(kPunct);
        out += ' ';
    }
    out += "\n\n";
}

void code(Lcg &rng, std::string &out) {
    std::string fn = coined(rng), arg = coined(rng), acc = coined(rng);
    out += "def " + fn + "(" + arg + ": int, scale=" + std::to_string(rng.below(100)) + ".5) -> list[int]:\n";
    out += "    \"\"\"Compute the " + coined(rng) + " table.\"\"\"\n";
    out += "    " + acc + " = []\n";
    out += "    for i in range(" + arg + "):\n";
    out += "        if i % " + std::to_string(2 + rng.below(9)) + " == 0:\n";
    out += "            " + acc + ".append(i * scale)  # " + rng.pick(kWords) + "\n";
    out += "    return {\"" + fn + "\": " + acc + ", \"n\": len(" + acc + ")}\n\n";
}

void cjk(Lcg &rng, std::string &out) {
    for (size_t n = 20 + rng.below(60), i = 0; i < n; ++i) {
        if (rng.below(6) == 0) out += rng.pick(kKana);
        else append_code_point(out, 0x4E00 + static_cast<uint32_t>(rng.below(0x9FA5 - 0x4E00)));
        if (rng.below(15) == 0) out += "，";
    }
    out += "。\n";
}

void emoji(Lcg &rng, std::string &out) {
    for (size_t n = 3 + rng.below(10); n > 0; --n) {
        out += rng.pick(kEmoji);
        if (rng.below(3) == 0) out += ' ';
    }
    out += " «café» “naïve” — ∑∞ ≤ π\n";
}

// About `bytes` of mixed text: mostly prose, then code, CJK and emoji.
std::string mixed_text(size_t bytes) {
    Lcg rng;
    std::string text;
    while (text.size() < bytes) {
        size_t kind = rng.below(10);
        if (kind < 5) prose(rng, text);
        else if (kind < 8) code(rng, text);
        else if (kind < 9) cjk(rng, text);
        else emoji(rng, text);
    }
    return text;
}

// CPU time of this thread: on a shared machine wall time also counts other processes.
double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int fail(const char *what, dsi_status st) {
    std::fprintf(stderr, "bench_tokenizer: %s: %s (%s)\n", what, dsi_status_name(st), dsi_last_error());
    return 1;
}

}  // namespace

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : std::getenv("DSI_DEEPSEEK_TOKENIZER");
    int iterations = argc > 2 ? std::atoi(argv[2]) : 5;
    if (!path || iterations < 1) {
        std::fprintf(stderr, "usage: %s TOKENIZER_JSON [ITERATIONS]  (or set DSI_DEEPSEEK_TOKENIZER)\n", argv[0]);
        return 2;
    }

    auto t0 = std::chrono::steady_clock::now();
    dsi_tokenizer *tok = nullptr;
    dsi_status st = dsi_tokenizer_load(path, &tok);
    if (st != DSI_OK) return fail("load", st);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    const std::string text = mixed_text(1 << 20);
    std::vector<int32_t> ids(text.size() + 1);
    size_t n_ids = 0;
    double best = 1e30, total = 0, cpu = 0;
    for (int i = 0; i < iterations; ++i) {
        auto start = std::chrono::steady_clock::now();
        double cpu_start = thread_cpu_seconds();
        st = dsi_tokenize(tok, text.data(), text.size(), 1, ids.data(), ids.size(), &n_ids);
        cpu += thread_cpu_seconds() - cpu_start;
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (st != DSI_OK) return fail("tokenize", st);
        best = s < best ? s : best;
        total += s;
    }

    std::string decoded(text.size() + 1, '\0');
    size_t decoded_len = 0;
    auto start = std::chrono::steady_clock::now();
    st = dsi_detokenize(tok, ids.data(), n_ids, 0, &decoded[0], decoded.size(), &decoded_len);
    double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (st != DSI_OK) return fail("detokenize", st);
    decoded.resize(decoded_len);

    const double mb = text.size() / 1e6;
    std::printf("tokenizer: %s (n_vocab %d, loaded in %.2f s)\n", path, dsi_tokenizer_n_vocab(tok), load_s);
    std::printf("text: %zu bytes -> %zu ids (%.2f bytes/id)\n", text.size(), n_ids, double(text.size()) / n_ids);
    std::printf("encode: %.1f MB/s best, %.1f MB/s mean over %d runs (%.1f MB/s of thread CPU time)\n", mb / best,
                mb * iterations / total, iterations, mb * iterations / cpu);
    std::printf("decode: %.1f MB/s, round trip %s\n", mb / decode_s, decoded == text ? "exact" : "DIFFERS");
    dsi_tokenizer_free(tok);
    return decoded == text ? 0 : 1;
}
