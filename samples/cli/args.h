// Command-line parsing and error reporting shared by the dsinfer subcommands.
#pragma once

#include "dsinfer.h"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli {

// A mistake in the command line: reported with a hint to --help, exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A library call failed: reported as "<status name>: <dsi_last_error()>", exit status 1.
struct LibraryError : std::runtime_error {
    LibraryError(dsi_status s, const std::string &message) : std::runtime_error(message), status(s) {}
    dsi_status status;
};

// Anything else that stops a command (a file the CLI itself reads or writes), exit 1.
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Throws LibraryError with the thread's message unless status is DSI_OK.
void check(dsi_status status);

// The flags of one subcommand. The help text is generated from the same table that
// parsing uses, so every flag that is accepted is documented.
class FlagSet {
public:
    FlagSet(std::string command, std::string synopsis, std::string description);

    // A flag that takes a value ("--name VALUE" or "--name=VALUE").
    void value(const char *name, const char *metavar, std::string help,
               std::function<void(const std::string &)> set);
    // A flag without a value.
    void flag(const char *name, std::string help, std::function<void()> set);
    // A one-letter spelling of a flag already added ("-m" for "--model"), as llama.cpp has.
    void alias(const char *short_name, const char *name);

    // Parses args. On "--help" prints the help to stdout and returns false: the command
    // then exits 0 without running.
    bool parse(const std::vector<std::string> &args);
    bool seen(const std::string &name) const;
    // UsageError unless `name` was given.
    void require(const std::string &name) const;
    void print_help(std::FILE *out) const;

    const std::string &command() const { return command_; }

private:
    struct Entry {
        std::string name, metavar, help;
        std::function<void(const std::string &)> set;  // gets "" for value-less flags
        std::string short_name;                        // "" or e.g. "-m"
    };
    const Entry *find(const std::string &name) const;

    std::string command_, synopsis_, description_;
    std::vector<Entry> entries_;
    std::vector<std::string> seen_;
};

// The candidate closest to `word` by edit distance when it is a plausible misspelling
// (at most 2 edits, fewer than half its length), else "".
std::string closest(const std::string &word, const std::vector<std::string> &candidates);

// " (did you mean 'X'?)" for the closest candidate, or "".
std::string did_you_mean(const std::string &word, const std::vector<std::string> &candidates);

// Strict number parsing: the whole text must be the number, in [min, max]; the
// UsageError names the flag and the text.
int64_t parse_int(const std::string &flag, const std::string &text, int64_t min, int64_t max);
double parse_double(const std::string &flag, const std::string &text, double min, double max);
uint64_t parse_u64(const std::string &flag, const std::string &text);

// Token ids separated by commas and/or whitespace, e.g. "1,2,3" or "1, 2\n3".
std::vector<int32_t> parse_ids(const std::string &what, const std::string &text);

// The whole file; Failure naming the path if it cannot be read.
std::string read_file(const std::string &path);

bool is_tty(std::FILE *stream);

}  // namespace cli
