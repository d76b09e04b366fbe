// dsinfer logits: the logits of every prompt position, as a NumPy .npy file.
#include "commands.h"
#include "engine.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace cli {
namespace {

struct Options {
    ModelOptions model;
    std::string ids, ids_file, out;
};

FlagSet flags(Options &o) {
    FlagSet f("logits", "--model DIR (--ids IDS | --ids-file FILE) --out FILE.npy [options]",
              "Evaluates the ids in one call and writes the logits of every position as a\n"
              "float32 array of shape (tokens, vocab) in NumPy .npy format.");
    add_model_flag(f, o.model);
    f.value("--ids", "IDS", "token ids, separated by commas and/or spaces", [&o](const std::string &v) { o.ids = v; });
    f.value("--ids-file", "FILE", "read the token ids from FILE (commas and/or whitespace)",
            [&o](const std::string &v) { o.ids_file = v; });
    f.value("--out", "FILE", "the .npy file to write", [&o](const std::string &v) { o.out = v; });
    add_runtime_flags(f, o.model, false);
    return f;
}

// Format 1.0: magic, version, little-endian header length, then a Python dict literal
// padded with spaces and ended by '\n' so that the data starts at a multiple of 64.
std::string npy_header(size_t rows, size_t cols) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
    const size_t prefix = 10, unpadded = prefix + dict.size() + 1;
    dict.append((unpadded + 63) / 64 * 64 - unpadded, ' ');
    dict += '\n';
    std::string header("\x93NUMPY\x01\x00", 8);
    header += static_cast<char>(dict.size() & 0xFF);
    header += static_cast<char>(dict.size() >> 8);
    return header + dict;
}

// '<f4' is little-endian whatever the host is.
void put_le32(unsigned char *dst, float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    for (int i = 0; i < 4; ++i) dst[i] = static_cast<unsigned char>(u >> (8 * i));
}

// Streams row by row (a long prompt of a 129k vocabulary is hundreds of MB); a file
// left incomplete by an error is removed.
void write_npy(const std::string &path, Model &model, size_t rows) {
    const size_t cols = static_cast<size_t>(dsi_session_n_vocab(model.session()));
    std::FILE *file = std::fopen(path.c_str(), "wb");
    if (!file) throw Failure("cannot write " + path + ": " + std::strerror(errno));
    const auto give_up = [&](const std::string &why) {
        std::fclose(file);
        std::remove(path.c_str());
        throw Failure(why);
    };
    const std::string header = npy_header(rows, cols);
    if (std::fwrite(header.data(), 1, header.size(), file) != header.size())
        give_up("cannot write " + path + ": " + std::strerror(errno));
    std::vector<unsigned char> row(cols * 4);
    for (size_t t = 0; t < rows; ++t) {
        const float *logits = dsi_context_logits(model.context(), static_cast<int32_t>(t));
        if (!logits) give_up("no logits for position " + std::to_string(t) + ": " + dsi_last_error());
        for (size_t v = 0; v < cols; ++v) put_le32(&row[4 * v], logits[v]);
        if (std::fwrite(row.data(), 1, row.size(), file) != row.size())
            give_up("cannot write " + path + ": " + std::strerror(errno));
    }
    if (std::fclose(file) != 0) {
        std::remove(path.c_str());
        throw Failure("cannot write " + path + ": " + std::strerror(errno));
    }
}

}  // namespace

void help_logits(std::FILE *out) {
    Options o;
    flags(o).print_help(out);
}

int run_logits(const Args &args) {
    Options o;
    FlagSet f = flags(o);
    if (!f.parse(args)) return 0;
    f.require("--model");
    f.require("--out");
    if (f.seen("--ids") == f.seen("--ids-file")) throw UsageError("give exactly one of --ids and --ids-file");
    const std::vector<int32_t> ids =
        f.seen("--ids") ? parse_ids("--ids", o.ids) : parse_ids(o.ids_file, read_file(o.ids_file));

    Model model(o.model);
    model.create_context(static_cast<int64_t>(ids.size()));
    model.prefill(ids, DSI_EVAL_LOGITS_ALL);
    write_npy(o.out, model, ids.size());
    if (o.model.stats) model.stats.print();
    return 0;
}

}  // namespace cli
