// tdyn: one program, subcommands (train | eval | info). Errors in input are one line on
// stderr and a non-zero exit; see docs/CLI.md for the exit codes.
#include "commands.hpp"
#include "common.hpp"

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace {
/// Ends the program after an error, skipping the exit handlers: every file was closed by its
/// destructor while the exception unwound, and when a close failed (a write error, a full disk)
/// HDF5 1.10's own exit handler tries to close the file again and crashes (SIGSEGV in
/// H5F__close_cb). tests/bad_input_test.cpp RunFile.WriteError... checks the exit is clean.
[[noreturn]] void exit_after_error(int code) {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    std::_Exit(code);
}
}  // namespace

int main(int argc, char** argv) {
    using namespace tdyn::cli;
    set_command_line(argc, argv);
    CLI::App app{"tdyn " TDYN_VERSION
                 ": training dynamics of neural networks (gradient descent as a dynamical system)"};
    app.require_subcommand(1, 1);
    app.set_version_flag("--version", std::string(TDYN_VERSION));
    int exit_code = 0;
    // A flag given twice takes its last value, as in git: scripts/run.sh --steps 200 overrides
    // the script's own --steps. Subcommands inherit this default when they are created.
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    setup_train(app, exit_code);
    setup_eval(app, exit_code);
    setup_info(app, exit_code);
    setup_spectrum(app, exit_code);
    setup_lyapunov(app, exit_code);
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "tdyn: " << e.what() << " (see tdyn --help)\n";
        return kExitUsage;
    } catch (const tdyn::Error& e) {
        std::cerr << "tdyn: " << flag_message(e.what()) << "\n";
        exit_after_error(kExitError);
    } catch (const std::bad_alloc&) {
        std::cerr << "tdyn: out of memory\n";
        exit_after_error(kExitError);
    } catch (const std::exception& e) {  // not expected: still one line and a non-zero exit, never a core dump
        std::cerr << "tdyn: internal error: " << e.what() << "\n";
        exit_after_error(kExitError);
    }
    return exit_code;
}
