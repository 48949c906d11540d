// Each subcommand binds its flags in setup_<cmd>; its callback sets the exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace tdyn::cli {
void setup_train(CLI::App& app, int& exit_code);
void setup_eval(CLI::App& app, int& exit_code);
void setup_info(CLI::App& app, int& exit_code);
void setup_spectrum(CLI::App& app, int& exit_code);
void setup_lyapunov(CLI::App& app, int& exit_code);
void setup_response(CLI::App& app, int& exit_code);
void setup_growth(CLI::App& app, int& exit_code);
}  // namespace tdyn::cli
