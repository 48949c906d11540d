// Pieces every subcommand shares: the problem flags, progress lines, JSON output.
#pragma once

#include "tdyn/analysis.hpp"
#include "tdyn/trainer.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

namespace tdyn::cli {

/// CLI11's NonNegativeNumber and PositiveNumber with tdyn's wording: "--samples: must be >= 0,
/// found -3" (CLI11's own print the range up to DBL_MAX in full). Same names in --help.
extern const CLI::Validator NonNegative;
extern const CLI::Validator Positive;

/// Exit codes (docs/CLI.md).
inline constexpr int kExitError = 1, kExitUsage = 2, kExitDiverged = 3, kExitInterrupted = 130;

/// Flags that name the problem: data, network, numerics.
struct ProblemFlags {
    std::string data = "mnist", data_dir, arch = "784-50-10", activation = "sigmoid", output = "softmax-ce";
    std::string precision = "f64", x_path = "auto";
    Index samples = 0;
};

/// Adds the problem flags to a subcommand. Options are CLI11 pointers so callers can ask
/// whether the user gave them (a run file's own config is overridden only by given flags).
struct ProblemOptions {
    CLI::Option *data, *samples, *arch, *activation, *output, *precision, *x_path;
};
ProblemOptions add_problem_flags(CLI::App* app, ProblemFlags& f);
/// Commands that work on a run file take its problem from the file: any of --data, --arch,
/// --samples, --activation, --output given is refused (one line naming them).
void refuse_problem_flags(const ProblemOptions& given);

/// Applies the given flags over a config (all of them for a fresh problem).
void apply_problem_flags(const ProblemFlags& f, const ProblemOptions& o, TrainConfig& c, bool only_given);

/// The command line as one string, for the run file's command_line attribute.
std::string command_line();
void set_command_line(int argc, char** argv);

/// SIGINT and SIGTERM set the returned flag (the driver stops at the end of the step); a second
/// signal kills at once. Under MPI the flag is the one all ranks agree on (ranks::agreed_stop),
/// so every rank stops at the same step.
const std::atomic<bool>* stop_on_signals();

/// With TDYN_MPI_CHECK set (MPI runs), the last analysis of a pass: at each step every rank
/// must hold the same bits of theta_{t+1} (ranks::check_same), else the run stops with an error.
/// Writes nothing. `with()` appends it to a pass's analyses when the variable is set.
class RankCheck final : public Analysis {
public:
    std::vector<Analysis*> with(std::vector<Analysis*> analyses);
    std::string name() const override { return "rank check"; }
    void create(h5::File&) override {}
    void start(Index, const Vector&) override {}
    void truncate(h5::File&, Index) override {}
    void restore(h5::File&, Index) override {}
    void checkpoint(h5::File&, Index) override {}
    void step(StepContext& c) override;
};

/// MPI: rank 0 reads the file at `path` (a run file this command reads and then writes) and
/// sends its bytes to the other ranks, which work on that copy in memory and never open the
/// file itself. Collective; nothing in one process.
void share_file(const std::string& path);

/// A flag given with --resume against the stored setting: (option, value given, value stored).
using FlagCheck = std::tuple<CLI::Option*, std::string, std::string>;
/// "--lr 0.2 differs from the run's 0.1; ..." for every given flag whose value differs from the
/// stored one (`whose`: "the run's"), or "" when all agree.
std::string flag_differences(const std::vector<FlagCheck>& checks, const std::string& whose);

/// One line per update on a terminal (rewritten in place), plain lines every ~10 s otherwise.
class Progress {
public:
    Progress(Index first, Index last, bool quiet);
    ~Progress() { done(); }  // an error mid-run then starts its message on a line of its own
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    void update(Index t, double loss, double accuracy);
    void done();

private:
    using Clock = std::chrono::steady_clock;
    Index m_first, m_last;
    bool m_quiet, m_tty;
    Clock::time_point m_start, m_last_print;
    bool m_open_line = false;
};

/// The library's checks, with their messages naming this program's flags: the library names
/// its parameters ("eigs 43: ...", "warmup 3: ... multiple of qr_every 2"), a command its flags
/// ("--eigs 43: ...", "--warmup 3: ... multiple of --qr-every 2"). Same rules, same text otherwise.
/// A library message that starts with a parameter name ("samples 61: ...", "arch: ...") starts
/// with its flag instead ("--samples 61: ..."); main() shows every tdyn::Error through it. Only
/// the leading word is translated: the same word inside a sentence stays plain English.
std::string flag_message(const std::string& library_message);
void check_qr_flags(Index qr_every, Index warmup);  ///< --qr-every, --warmup: tdyn::check_qr_schedule

/// The vectors of an HDF5 file with /vector [P] or /vectors [k x P] (one vector per row), as the
/// columns of a P x k matrix (`single`: the file held /vector). Errors name the file and say what
/// is wrong: neither dataset, no vectors, a length other than P (`params` says whose P), NaN or Inf.
Matrix read_vectors_file(const std::string& path, Index P, const std::string& params, bool* single = nullptr);

/// How a started Lyapunov analysis began, from its start_file attribute: "started along FILE"
/// (--start-vectors) or "started with --start-along END:K".
std::string start_phrase(const std::string& start_source);

/// The JSON objects of --json: keys stay in insertion order.
using Json = nlohmann::ordered_json;

/// A JSON value as the one line every --json output prints: {"key": value, ...} and [a, b],
/// ", " and ": " between the parts (what scripts and tests match). The scalars are nlohmann's:
/// strings escaped (invalid UTF-8 replaced by U+FFFD), doubles in the shortest text that reads
/// back as the same double, NaN and Inf as null.
std::string json_line(const Json& j);

}  // namespace tdyn::cli
