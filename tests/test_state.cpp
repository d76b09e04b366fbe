// labels: cpu serving badinput
// Saved state (include/dsinfer.h, "Saved state"): a context saved mid-generation with
// its sampler and restored in ANOTHER PROCESS continues with the same ids; a state is
// refused with the right status, before anything changes, when it is of another model,
// of a newer schema, truncated, corrupted or inconsistent; random corruption never
// crashes (run under ASan/UBSan in CI).
#include <doctest/doctest.h>

#include "dsinfer.h"
#include "state_generated.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const std::string kDemo = std::string(DSI_SOURCE_DIR) + "/models/demo";
const std::string kTiny = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-bf16";

struct Session {
    dsi_session *s = nullptr;
    explicit Session(const std::string &dir = kDemo) {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.n_threads = 2;
        REQUIRE_MESSAGE(dsi_session_open(dir.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    }
    ~Session() { dsi_session_free(s); }
};

struct Context {
    dsi_context *c = nullptr;
    explicit Context(dsi_session *s) { REQUIRE_MESSAGE(dsi_context_create(s, nullptr, &c) == DSI_OK, dsi_last_error()); }
    ~Context() { dsi_context_free(c); }
};

struct Sampler {
    dsi_sampler *s = nullptr;
    explicit Sampler(uint64_t seed) {
        dsi_sampler_params p = dsi_sampler_default_params();
        p.seed = seed;
        p.temperature = 1.1f;  // a real draw every step, so the random state matters
        REQUIRE(dsi_sampler_create(&p, &s) == DSI_OK);
    }
    ~Sampler() { dsi_sampler_free(s); }
};

// n sampled tokens, each evaluated after it is drawn.
std::vector<int32_t> generate(dsi_context *c, dsi_sampler *s, int n) {
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) {
        int32_t t = -1;
        REQUIRE_MESSAGE(dsi_sampler_sample(s, c, &t) == DSI_OK, dsi_last_error());
        REQUIRE_MESSAGE(dsi_context_eval(c, &t, 1, 0) == DSI_OK, dsi_last_error());
        ids.push_back(t);
    }
    return ids;
}

std::vector<int32_t> prompt() {
    std::mt19937 g(21);
    std::uniform_int_distribution<int32_t> U(2, 4000);
    std::vector<int32_t> p(150);
    for (int32_t &t : p) t = U(g);
    return p;
}

std::vector<uint8_t> save(dsi_context *c, dsi_sampler *s) {
    void *data = nullptr;
    size_t size = 0;
    REQUIRE_MESSAGE(dsi_context_save_state(c, s, &data, &size) == DSI_OK, dsi_last_error());
    std::vector<uint8_t> v(static_cast<uint8_t *>(data), static_cast<uint8_t *>(data) + size);
    dsi_free(data);
    return v;
}

const char *env(const char *name) { return std::getenv(name); }

}  // namespace

// Run by the test below in a separate process (doctest --no-skip): loads the state,
// generates, writes the ids.
TEST_CASE("state child: restore and continue" * doctest::skip()) {
    const char *in = env("DSI_STATE_IN"), *out = env("DSI_STATE_OUT");
    REQUIRE(in != nullptr);
    REQUIRE(out != nullptr);
    Session s;
    Context c(s.s);
    Sampler smp(999);  // replaced by the saved sampler's state
    REQUIRE_MESSAGE(dsi_context_load_state_file(c.c, in, smp.s) == DSI_OK, dsi_last_error());
    const auto ids = generate(c.c, smp.s, 12);
    std::ofstream f(out);
    for (int32_t t : ids) f << t << "\n";
}

TEST_CASE("a context saved mid-generation continues bit-identically in another process") {
    Session s;
    Context c(s.s);
    Sampler smp(7);
    const auto p = prompt();
    REQUIRE(dsi_context_eval(c.c, p.data(), p.size(), 0) == DSI_OK);
    generate(c.c, smp.s, 5);
    const fs::path dir = fs::temp_directory_path() / ("dsi_state_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string state = (dir / "ctx.dsis").string(), ids_file = (dir / "ids.txt").string();
    REQUIRE_MESSAGE(dsi_context_save_state_file(c.c, smp.s, state.c_str()) == DSI_OK, dsi_last_error());
    const auto want = generate(c.c, smp.s, 12);

    const std::string cmd = "DSI_STATE_IN='" + state + "' DSI_STATE_OUT='" + ids_file + "' '" + DSI_BINARY_DIR +
                            "/tests/test_state' --no-skip -tc='state child: restore and continue' > '" +
                            (dir / "child.log").string() + "' 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream log(dir / "child.log");
    const std::string child_log((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    INFO("child: " << child_log);
    REQUIRE(rc == 0);
    std::ifstream f(ids_file);
    std::vector<int32_t> got;
    for (int32_t t; f >> t;) got.push_back(t);
    CHECK(got == want);
    fs::remove_all(dir);
}

TEST_CASE("a state loaded in the same process gives bit-identical logits and reuses nothing wrongly") {
    Session s;
    Context a(s.s), b(s.s);
    const auto p = prompt();
    REQUIRE(dsi_context_eval(a.c, p.data(), p.size(), 0) == DSI_OK);
    const auto bytes = save(a.c, nullptr);
    REQUIRE(dsi_context_load_state(b.c, bytes.data(), bytes.size(), nullptr) == DSI_OK);
    CHECK(dsi_context_length(b.c) == 150);
    const int32_t V = dsi_session_n_vocab(s.s);
    CHECK(std::memcmp(dsi_context_logits(a.c, -1), dsi_context_logits(b.c, -1), V * sizeof(float)) == 0);
    const int32_t next = 17;
    REQUIRE(dsi_context_eval(a.c, &next, 1, 0) == DSI_OK);
    REQUIRE(dsi_context_eval(b.c, &next, 1, 0) == DSI_OK);
    CHECK(std::memcmp(dsi_context_logits(a.c, -1), dsi_context_logits(b.c, -1), V * sizeof(float)) == 0);
    // An unaligned copy of the buffer loads too.
    std::vector<uint8_t> shifted(bytes.size() + 1);
    std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
    REQUIRE(dsi_context_load_state(b.c, shifted.data() + 1, bytes.size(), nullptr) == DSI_OK);
    // An empty context round-trips.
    Context e(s.s), f(s.s);
    const auto empty = save(e.c, nullptr);
    REQUIRE(dsi_context_load_state(f.c, empty.data(), empty.size(), nullptr) == DSI_OK);
    CHECK(dsi_context_length(f.c) == 0);
}

TEST_CASE("bad states: another model, newer schema, no sampler, truncated, corrupted") {
    Session s;
    Context a(s.s), b(s.s);
    const auto p = prompt();
    REQUIRE(dsi_context_eval(a.c, p.data(), 70, 0) == DSI_OK);
    REQUIRE(dsi_context_eval(b.c, p.data(), 20, 0) == DSI_OK);
    const auto good = save(a.c, nullptr);
    const int32_t V = dsi_session_n_vocab(s.s);
    const std::vector<float> b_logits(dsi_context_logits(b.c, -1), dsi_context_logits(b.c, -1) + V);
    auto unchanged = [&] {
        CHECK(dsi_context_length(b.c) == 20);
        CHECK(std::memcmp(dsi_context_logits(b.c, -1), b_logits.data(), V * sizeof(float)) == 0);
    };
    auto expect = [&](const std::vector<uint8_t> &bytes, dsi_status status, const char *needle, dsi_sampler *smp = nullptr) {
        CAPTURE(needle);
        CHECK(dsi_context_load_state(b.c, bytes.data(), bytes.size(), smp) == status);
        CHECK(std::string(dsi_last_error()).find(needle) != std::string::npos);
        unchanged();
    };

    SUBCASE("another model") {
        Session tiny(kTiny);
        Context t(tiny.s);
        CHECK(dsi_context_load_state(t.c, good.data(), good.size(), nullptr) == DSI_ERR_CONFIG);
        CHECK(std::string(dsi_last_error()).find("another model") != std::string::npos);
    }
    SUBCASE("a newer schema version") {
        // Rebuild the state with schema_version 2 through the generated API.
        const auto *st = dsi::state::GetState(good.data());
        flatbuffers::FlatBufferBuilder fb;
        std::vector<flatbuffers::Offset<dsi::state::LayerCache>> layers;
        for (const auto *lc : *st->cache())
            layers.push_back(dsi::state::CreateLayerCache(
                fb, fb.CreateVector(lc->latent()->data(), lc->latent()->size()),
                fb.CreateVector(lc->k_rope()->data(), lc->k_rope()->size()),
                fb.CreateVector(lc->index_key()->data(), lc->index_key()->size())));
        auto root = dsi::state::CreateState(
            fb, 2, fb.CreateVector(st->model_identity()->data(), st->model_identity()->size()), fb.CreateString("x"),
            st->layers(), st->kv_lora_rank(), st->rope_dim(), st->index_dim(),
            fb.CreateVector(st->tokens()->data(), st->tokens()->size()), fb.CreateVector(layers),
            fb.CreateVector(st->logits()->data(), st->logits()->size()), st->logits_rows());
        dsi::state::FinishStateBuffer(fb, root);
        expect(std::vector<uint8_t>(fb.GetBufferPointer(), fb.GetBufferPointer() + fb.GetSize()), DSI_ERR_FORMAT,
               "saved by a newer dsinfer");
    }
    SUBCASE("a sampler asked of a state saved without one") {
        Sampler smp(1);
        expect(good, DSI_ERR_INVALID_ARGUMENT, "holds none", smp.s);
    }
    SUBCASE("not a state, truncated") {
        expect(std::vector<uint8_t>{1, 2, 3}, DSI_ERR_FORMAT, "too short");
        std::vector<uint8_t> wrong_id = good;
        std::memcpy(wrong_id.data() + 4, "XXXX", 4);
        expect(wrong_id, DSI_ERR_FORMAT, "file identifier");
        for (size_t cut : {good.size() / 2, good.size() - 1, size_t(64)})
            expect(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<int64_t>(cut)), DSI_ERR_FORMAT, "");
    }
    SUBCASE("random corruption never crashes; what loads is consistent") {
        std::mt19937 g(5);
        int refused = 0, loaded = 0;
        for (int iter = 0; iter < 300; ++iter) {
            std::vector<uint8_t> bad = good;
            const int flips = 1 + static_cast<int>(g() % 8);
            // Mostly the header and tables (the first and last bytes), sometimes anywhere.
            for (int k = 0; k < flips; ++k) {
                const size_t at = g() % 3 == 0 ? g() % bad.size() : (g() % 2 ? g() % 256 : bad.size() - 1 - g() % 256);
                bad[at] ^= static_cast<uint8_t>(1u << (g() % 8));
            }
            if (g() % 4 == 0) bad.resize(g() % bad.size());
            Context c(s.s);
            const dsi_status st = dsi_context_load_state(c.c, bad.data(), bad.size(), nullptr);
            if (st != DSI_OK) {
                ++refused;
                CHECK(std::strlen(dsi_last_error()) > 0);
                CHECK(dsi_context_length(c.c) == 0);
                continue;
            }
            // A flip inside float data is still a valid state: it must then evaluate.
            ++loaded;
            const int32_t t = 5;
            const dsi_status e = dsi_context_eval(c.c, &t, 1, 0);
            CHECK((e == DSI_OK || e == DSI_ERR_CONTEXT_FULL));
        }
        MESSAGE("corrupted states: " << refused << " refused, " << loaded << " loaded");
        CHECK(refused > 100);
    }
}

TEST_CASE("state API: NULL arguments") {
    Session s;
    Context c(s.s);
    void *data = nullptr;
    size_t size = 0;
    CHECK(dsi_context_save_state(nullptr, nullptr, &data, &size) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_save_state(c.c, nullptr, nullptr, &size) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_load_state(c.c, nullptr, 10, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_load_state_file(c.c, "/nonexistent/x.dsis", nullptr) == DSI_ERR_IO);
    CHECK(dsi_context_save_state_file(c.c, nullptr, "/nonexistent/dir/x.dsis") == DSI_ERR_IO);
}
