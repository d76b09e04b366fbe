#include "args.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace cli {

void check(dsi_status status) {
    if (status != DSI_OK) throw LibraryError(status, dsi_last_error());
}

FlagSet::FlagSet(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

void FlagSet::value(const char *name, const char *metavar, std::string help,
                    std::function<void(const std::string &)> set) {
    entries_.push_back({name, metavar, std::move(help), std::move(set), ""});
}

void FlagSet::flag(const char *name, std::string help, std::function<void()> set) {
    entries_.push_back({name, "", std::move(help), [set = std::move(set)](const std::string &) { set(); }, ""});
}

void FlagSet::alias(const char *short_name, const char *name) {
    for (Entry &e : entries_)
        if (e.name == name) e.short_name = short_name;
}

const FlagSet::Entry *FlagSet::find(const std::string &name) const {
    for (const Entry &e : entries_)
        if (e.name == name || (!e.short_name.empty() && e.short_name == name)) return &e;
    return nullptr;
}

std::string closest(const std::string &word, const std::vector<std::string> &candidates) {
    std::string best;
    size_t best_distance = SIZE_MAX;
    for (const std::string &c : candidates) {
        // Levenshtein distance, one row at a time.
        std::vector<size_t> row(c.size() + 1);
        for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
        for (size_t i = 1; i <= word.size(); ++i) {
            size_t diagonal = row[0];
            row[0] = i;
            for (size_t j = 1; j <= c.size(); ++j) {
                const size_t up = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (word[i - 1] == c[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        if (row[c.size()] < best_distance) {
            best_distance = row[c.size()];
            best = c;
        }
    }
    return best_distance <= 2 && 2 * best_distance < word.size() ? best : std::string();
}

std::string did_you_mean(const std::string &word, const std::vector<std::string> &candidates) {
    const std::string best = closest(word, candidates);
    return best.empty() ? std::string() : " (did you mean '" + best + "'?)";
}

// Returns false when --help was handled, so that the command exits 0 without running.
bool FlagSet::parse(const std::vector<std::string> &args) {
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string &arg = args[i];
        if (arg == "--help" || arg == "-h") {
            print_help(stdout);
            return false;
        }
        const bool short_flag = arg.size() == 2 && arg[0] == '-' && arg[1] != '-';
        if (arg.compare(0, 2, "--") != 0 && !short_flag) throw UsageError("unexpected argument '" + arg + "'");
        const size_t eq = short_flag ? std::string::npos : arg.find('=');
        const std::string given = arg.substr(0, eq);
        const Entry *e = find(given);
        if (!e) {
            std::vector<std::string> names;
            for (const Entry &entry : entries_) names.push_back(entry.name);
            throw UsageError("unknown flag '" + given + "'" + did_you_mean(given, names));
        }
        const std::string &name = e->name;
        if (seen(name)) throw UsageError(name + " is given twice");
        std::string val;
        if (e->metavar.empty()) {
            if (eq != std::string::npos) throw UsageError(name + " takes no value");
        } else if (eq != std::string::npos) {
            val = arg.substr(eq + 1);
        } else {
            if (i + 1 >= args.size()) throw UsageError("missing value for " + name);
            val = args[++i];
        }
        seen_.push_back(name);
        e->set(val);
    }
    return true;
}

bool FlagSet::seen(const std::string &name) const {
    return std::find(seen_.begin(), seen_.end(), name) != seen_.end();
}

void FlagSet::require(const std::string &name) const {
    if (!seen(name)) throw UsageError("missing " + name);
}

void FlagSet::print_help(std::FILE *out) const {
    std::fprintf(out, "usage: dsinfer %s %s\n\n%s\n\noptions:\n", command_.c_str(), synopsis_.c_str(),
                 description_.c_str());
    const int width = 26;
    for (const Entry &e : entries_) {
        const std::string names = e.short_name.empty() ? e.name : e.short_name + ", " + e.name;
        const std::string left = e.metavar.empty() ? names : names + " " + e.metavar;
        if (static_cast<int>(left.size()) + 2 < width)
            std::fprintf(out, "  %-*s%s\n", width - 2, left.c_str(), e.help.c_str());
        else
            std::fprintf(out, "  %s\n  %-*s%s\n", left.c_str(), width - 2, "", e.help.c_str());
    }
    std::fprintf(out, "  %-*s%s\n", width - 2, "-h, --help", "show this help and exit");
}

// strto* skip leading whitespace and accept a sign; the checks around them make the
// parse strict: the text is exactly one number.
int64_t parse_int(const std::string &flag, const std::string &text, int64_t min, int64_t max) {
    const char *s = text.c_str();
    char *end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s, &end, 10);
    const bool ok = !text.empty() && !std::isspace(static_cast<unsigned char>(s[0])) &&
                    end == s + text.size() && errno != ERANGE && v >= min && v <= max;
    if (!ok) {
        std::ostringstream msg;
        msg << flag << ": expected an integer in [" << min << ", " << max << "], got '" << text << "'";
        throw UsageError(msg.str());
    }
    return v;
}

double parse_double(const std::string &flag, const std::string &text, double min, double max) {
    const char *s = text.c_str();
    char *end = nullptr;
    errno = 0;
    const double v = std::strtod(s, &end);
    const bool ok = !text.empty() && !std::isspace(static_cast<unsigned char>(s[0])) &&
                    end == s + text.size() && errno != ERANGE && std::isfinite(v) && v >= min && v <= max;
    if (!ok) {
        std::ostringstream msg;
        msg << flag << ": expected a number";
        if (std::isfinite(min) && std::isfinite(max)) msg << " in [" << min << ", " << max << "]";
        else if (std::isfinite(min)) msg << " >= " << min;
        msg << ", got '" << text << "'";
        throw UsageError(msg.str());
    }
    return v;
}

uint64_t parse_u64(const std::string &flag, const std::string &text) {
    const char *s = text.c_str();
    char *end = nullptr;
    errno = 0;
    // strtoull would accept "-1" as 2^64-1; only plain digits are a valid seed.
    const unsigned long long v = std::isdigit(static_cast<unsigned char>(s[0])) ? std::strtoull(s, &end, 10) : 0;
    if (!end || end != s + text.size() || errno == ERANGE)
        throw UsageError(flag + ": expected an unsigned 64-bit integer, got '" + text + "'");
    return v;
}

std::vector<int32_t> parse_ids(const std::string &what, const std::string &text) {
    std::vector<int32_t> ids;
    size_t i = 0;
    const auto separator = [](char c) { return c == ',' || std::isspace(static_cast<unsigned char>(c)); };
    while (i < text.size()) {
        if (separator(text[i])) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < text.size() && !separator(text[j])) ++j;
        ids.push_back(static_cast<int32_t>(parse_int(what, text.substr(i, j - i), INT32_MIN, INT32_MAX)));
        i = j;
    }
    if (ids.empty()) throw UsageError(what + ": no token ids");
    return ids;
}

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Failure("cannot read " + path + ": " + std::strerror(errno));
    std::ostringstream data;
    data << in.rdbuf();
    if (in.bad()) throw Failure("cannot read " + path);
    return data.str();
}

bool is_tty(std::FILE *stream) { return isatty(fileno(stream)) != 0; }

}  // namespace cli
