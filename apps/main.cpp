// tdyn: one program, subcommands (train | eval | info). Errors in input are one line on
// stderr and a non-zero exit; see docs/CLI.md for the exit codes.
#include "commands.hpp"
#include "common.hpp"
#include "tdyn/ranks.hpp"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

namespace {
/// Ends the program after an error, skipping the exit handlers: every file was closed by its
/// destructor while the exception unwound, and when a close failed (a write error, a full disk)
/// HDF5 1.10's own exit handler tries to close the file again and crashes (SIGSEGV in
/// H5F__close_cb). tests/bad_input_test.cpp RunFile.WriteError... checks the exit is clean.
[[noreturn]] void exit_after_error(int code) {
    tdyn::ranks::finalize();
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    std::_Exit(code);
}
}  // namespace

/// One line and an exit code for an error on this rank. Under MPI the ranks agree first
/// (ranks::fail): every rank ends with the lowest failing rank's line and code, rank 0 prints it.
[[noreturn]] void report(const std::string& line, int code) {
    const tdyn::ranks::Outcome o = tdyn::ranks::fail(line, code);
    if (tdyn::ranks::root()) std::cerr << o.line << "\n";
    exit_after_error(o.code);
}

int main(int argc, char** argv) {
    using namespace tdyn::cli;
    tdyn::ranks::init(&argc, &argv);
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
    setup_response(app, exit_code);
    setup_growth(app, exit_code);
    try {
        app.parse(argc, argv);
        tdyn::ranks::done();  // a rank that failed after the others' last collective is heard here
    } catch (const CLI::CallForHelp& e) {
        const int code = tdyn::ranks::root() ? app.exit(e) : 0;
        tdyn::ranks::finalize();
        return code;
    } catch (const CLI::CallForAllHelp& e) {
        const int code = tdyn::ranks::root() ? app.exit(e) : 0;
        tdyn::ranks::finalize();
        return code;
    } catch (const CLI::CallForVersion& e) {
        const int code = tdyn::ranks::root() ? app.exit(e) : 0;
        tdyn::ranks::finalize();
        return code;
    } catch (const CLI::ParseError& e) {
        report(std::string("tdyn: ") + e.what() + " (see tdyn --help)", kExitUsage);
    } catch (const tdyn::ranks::Failed& e) {  // another rank failed: its line, its code
        if (tdyn::ranks::root()) std::cerr << e.what() << "\n";
        exit_after_error(e.code());
    } catch (const tdyn::Error& e) {
        report(std::string("tdyn: ") + flag_message(e.what()), kExitError);
    } catch (const std::bad_alloc&) {
        report("tdyn: out of memory", kExitError);
    } catch (const std::exception& e) {  // not expected: still one line and a non-zero exit, never a core dump
        report(std::string("tdyn: internal error: ") + e.what(), kExitError);
    }
    tdyn::ranks::finalize();
    return exit_code;
}
