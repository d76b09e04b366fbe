// The subcommands of dsinfer. Each run_* takes the arguments after its name and returns
// the exit status; help_* prints the same help as "dsinfer NAME --help".
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace cli {

using Args = std::vector<std::string>;

int run_generate(const Args &args);
void help_generate(std::FILE *out);

int run_logits(const Args &args);
void help_logits(std::FILE *out);

int run_tokenize(const Args &args);
void help_tokenize(std::FILE *out);

int run_render_chat(const Args &args);
void help_render_chat(std::FILE *out);

int run_chat(const Args &args);
void help_chat(std::FILE *out);

int run_bench(const Args &args);
void help_bench(std::FILE *out);

int run_serve(const Args &args);
void help_serve(std::FILE *out);

}  // namespace cli
