// dsinfer: the command-line front end of the dsinfer library. It uses only the public
// C API (include/dsinfer.h), as any application would.
//
// Exit status: 0 success, 1 a library or file error, 2 a bad command line.
#include "cli/args.h"
#include "cli/commands.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct Command {
    const char *name;
    const char *summary;
    int (*run)(const cli::Args &);
    void (*help)(std::FILE *);
};

const Command kCommands[] = {
    {"generate", "continue a prompt (token ids or text)", cli::run_generate, cli::help_generate},
    {"logits", "write the logits of every prompt position to a .npy file", cli::run_logits, cli::help_logits},
    {"tokenize", "print the token ids of a text", cli::run_tokenize, cli::help_tokenize},
    {"render-chat", "print the DeepSeek-V3.2 prompt of a JSON conversation", cli::run_render_chat,
     cli::help_render_chat},
    {"chat", "chat interactively with a model", cli::run_chat, cli::help_chat},
    {"bench", "measure prefill and decode speed", cli::run_bench, cli::help_bench},
    {"serve", "serve the model over HTTP (OpenAI API, chat page)", cli::run_serve, cli::help_serve},
};

// The subcommands in a few lines; each one's flags are in "dsinfer COMMAND --help".
void print_help(std::FILE *out) {
    std::fprintf(out,
                 "usage: dsinfer COMMAND [options]     (dsinfer COMMAND --help lists its options)\n\n"
                 "Runs DeepSeek-V3.2 checkpoints with the dsinfer library %s.\n\ncommands:\n",
                 dsi_version());
    for (const Command &c : kCommands) std::fprintf(out, "  %-14s%s\n", c.name, c.summary);
    std::fprintf(out, "\nExit status: 0 on success, 1 when the library or a file fails, 2 for a bad command line.\n");
}

const Command *find_command(const char *name) {
    for (const Command &c : kCommands)
        if (std::strcmp(c.name, name) == 0) return &c;
    return nullptr;
}

std::vector<std::string> command_names() {
    std::vector<std::string> names;
    for (const Command &c : kCommands) names.push_back(c.name);
    return names;
}

int run(const Command &command, const cli::Args &args) {
    try {
        return command.run(args);
    } catch (const cli::UsageError &e) {
        std::fprintf(stderr, "dsinfer %s: %s\nTry 'dsinfer %s --help'.\n", command.name, e.what(), command.name);
        return 2;
    } catch (const cli::LibraryError &e) {
        std::fprintf(stderr, "dsinfer: error: %s\n", e.what());
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "dsinfer: error: %s\n", e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "dsinfer: missing command\nTry 'dsinfer --help'.\n");
        return 2;
    }
    const char *first = argv[1];
    if (std::strcmp(first, "--help") == 0 || std::strcmp(first, "-h") == 0 || std::strcmp(first, "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (std::strcmp(first, "--version") == 0) {
        std::printf("dsinfer %s\n", dsi_version());
        return 0;
    }
    const Command *command = find_command(first);
    if (!command) {
        std::fprintf(stderr, "dsinfer: unknown command '%s'%s\nTry 'dsinfer --help'.\n", first,
                     cli::did_you_mean(first, command_names()).c_str());
        return 2;
    }
    return run(*command, cli::Args(argv + 2, argv + argc));
}
