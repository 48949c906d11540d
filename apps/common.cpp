#include "common.hpp"

#include "tdyn/lyapunov.hpp"
#include "tdyn/spectrum.hpp"

#include "tdyn/h5.hpp"
#include "tdyn/ranks.hpp"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <regex>
#include <unistd.h>
#include <utility>

namespace tdyn::cli {

namespace {
CLI::Validator number_check(const char* name, const char* rule, bool (*ok)(double)) {
    return CLI::Validator(
        [rule, ok](std::string& text) -> std::string {
            double x = 0;
            if (!CLI::detail::lexical_cast(text, x)) return "expected a number, found '" + text + "'";
            return ok(x) ? std::string() : std::string("must be ") + rule + ", found " + text;
        },
        name, name);
}
}  // namespace

const CLI::Validator NonNegative = number_check("NONNEGATIVE", ">= 0", [](double x) { return x >= 0; });
const CLI::Validator Positive = number_check("POSITIVE", "> 0", [](double x) { return x > 0; });

void refuse_problem_flags(const ProblemOptions& given) {
    if (given.data->count() || given.arch->count() || given.samples->count() || given.activation->count() ||
        given.output->count())
        throw Error("--data/--arch/--samples/--activation/--output: a run file's problem is its own");
}

ProblemOptions add_problem_flags(CLI::App* app, ProblemFlags& f) {
    ProblemOptions o;
    o.data = app->add_option("--data", f.data, "mnist, fashion-mnist, or an HDF5 data file (/X and /T or /labels)")
                 ->capture_default_str();
    app->add_option("--data-dir", f.data_dir,
                    "folder holding mnist/ and fashion-mnist/ (default: $TDYN_DATA, else data/ of the project)");
    o.samples = app->add_option("--samples", f.samples, "use the first K samples (0 = all)")
                    ->check(NonNegative)
                    ->capture_default_str();
    o.arch = app->add_option("--arch", f.arch, "layer widths, input to output")->capture_default_str();
    o.activation =
        app->add_option("--activation", f.activation, "hidden activation: sigmoid, tanh, relu, softplus, identity")
            ->capture_default_str();
    o.output = app->add_option("--output", f.output, "output and loss: softmax-ce, sigmoid-mse, identity-mse")
                   ->capture_default_str();
    o.precision = app->add_option("--precision", f.precision, "precision of the products with X: f64 or f32")
                      ->capture_default_str();
    o.x_path = app->add_option("--x-path", f.x_path,
                               "products with X: auto (sparse when X is under 30% non-zero), dense, sparse")
                   ->capture_default_str();
    return o;
}

void apply_problem_flags(const ProblemFlags& f, const ProblemOptions& o, TrainConfig& c, bool only_given) {
    auto given = [&](CLI::Option* opt) { return !only_given || opt->count() > 0; };
    if (given(o.data)) c.data = f.data;
    if (given(o.samples)) c.samples = f.samples;
    if (given(o.arch)) c.arch = f.arch;
    if (given(o.activation)) c.activation = parse_activation(f.activation);
    if (given(o.output)) c.output = parse_output(f.output);
    if (given(o.precision)) c.precision = parse_precision(f.precision);
    if (given(o.x_path)) c.x_path = parse_xpath(f.x_path);
    c.architecture();  // validates --arch now, before any work
}

namespace {
std::string g_command_line;
std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) {
    g_stop.store(true);
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C kills at once
    std::signal(SIGTERM, SIG_DFL);
}
}  // namespace

const std::atomic<bool>* stop_on_signals() {
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    return ranks::agreed_stop(&g_stop);
}

std::vector<Analysis*> RankCheck::with(std::vector<Analysis*> analyses) {
    const char* env = std::getenv("TDYN_MPI_CHECK");
    if (ranks::size() > 1 && env && *env && std::string(env) != "0") analyses.push_back(this);
    return analyses;
}

void RankCheck::step(StepContext& c) { ranks::check_same(c.next_theta, "theta at step " + std::to_string(c.t + 1)); }

void share_file(const std::string& path) {
    if (ranks::size() == 1) return;
    std::string bytes;
    if (ranks::root()) {
        // A missing or unreadable file sends nothing: every rank then fails on it alike.
        std::ifstream in(path, std::ios::binary);
        if (in) bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    ranks::broadcast(bytes);
    if (!ranks::root() && !bytes.empty()) h5::set_image(path, std::move(bytes));
}

std::string flag_differences(const std::vector<FlagCheck>& checks, const std::string& whose) {
    std::string diff;
    for (const auto& [opt, given, stored] : checks)
        if (opt->count() > 0 && given != stored)
            diff +=
                (diff.empty() ? "" : "; ") + opt->get_name() + " " + given + " differs from " + whose + " " + stored;
    return diff;
}

void set_command_line(int argc, char** argv) {
    std::string s;
    for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
    g_command_line = s;
}

std::string command_line() { return g_command_line; }

Progress::Progress(Index first, Index last, bool quiet)
    : m_first(first), m_last(last), m_quiet(quiet), m_tty(isatty(fileno(stderr))), m_start(Clock::now()),
      m_last_print(m_start) {}

void Progress::update(Index t, double loss, double accuracy) {
    if (m_quiet) return;
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - m_start).count();
    const double since = std::chrono::duration<double>(now - m_last_print).count();
    const bool last = t == m_last;
    if (!(t == m_first || last || (m_tty ? since > 0.1 : since > 10.0))) return;
    m_last_print = now;
    const double done = double(t - m_first + 1);
    const double rate = elapsed > 0 ? done / elapsed : 0;
    const double eta = rate > 0 ? double(m_last - t) / rate : 0;
    char line[200];
    std::snprintf(line, sizeof line, "step %lld/%lld  loss %.6f  accuracy %.4f  %.2f steps/s  ETA %d:%02d",
                  (long long)t, (long long)m_last, loss, accuracy, rate, int(eta) / 60, int(eta) % 60);
    if (m_tty) {
        std::fprintf(stderr, "\r%s\033[K", line);
        m_open_line = true;
    } else {
        std::fprintf(stderr, "%s\n", line);
    }
    std::fflush(stderr);
}

void Progress::done() {
    if (m_open_line) std::fprintf(stderr, "\n");
    m_open_line = false;
}

namespace {

/// The library's Error with each parameter name (a whole word) replaced by its flag.
Error with_flag_names(const Error& e, std::initializer_list<std::pair<const char*, const char*>> names) {
    std::string m = e.what();
    for (const auto& [parameter, flag] : names)
        m = std::regex_replace(m, std::regex(std::string("\\b") + parameter + "\\b"), flag);
    return Error(m);
}

}  // namespace

std::string flag_message(const std::string& m) {
    static const std::pair<const char*, const char*> names[] = {{"lr", "--lr"},
                                                                {"weight_decay", "--weight-decay"},
                                                                {"batch", "--batch"},
                                                                {"eigs", "--eigs"},
                                                                {"krylov", "--krylov"},
                                                                {"probes", "--probes"},
                                                                {"lanczos_steps", "--lanczos-steps"},
                                                                {"samples", "--samples"},
                                                                {"arch", "--arch"},
                                                                {"data", "--data"},
                                                                {"precision", "--precision"},
                                                                {"x_path", "--x-path"},
                                                                {"activation", "--activation"},
                                                                {"output", "--output"},
                                                                {"perturbation", "--perturbation"},
                                                                {"which", "--which"},
                                                                {"init_scheme", "--init-scheme"},
                                                                {"init_scale", "--init-scale"},
                                                                {"qr_every", "--qr-every"},
                                                                {"warmup", "--warmup"}};
    for (const auto& [parameter, flag] : names) {
        const std::size_t n = std::strlen(parameter);
        if (m.compare(0, n, parameter) == 0 && m.size() > n && (m[n] == ' ' || m[n] == ':')) return flag + m.substr(n);
    }
    return m;
}

Matrix read_vectors_file(const std::string& path, Index P, const std::string& params, bool* single) {
    h5::File vf = h5::File::open_read(path);
    Matrix V;
    const bool one = vf.exists("/vector");
    if (one) V = vf.read_vector("/vector");
    else if (vf.exists("/vectors")) V = vf.read_matrix("/vectors").transpose();  // [k x P] on file, one vector per row
    else throw Error(path + ": expected /vector [P] or /vectors [k x P]");
    if (V.rows() != P)
        throw Error(path + ": vectors have " + std::to_string(V.rows()) + " entries; " + params + " has " +
                    std::to_string(P) + " parameters");
    if (!V.allFinite()) throw Error(path + ": vectors contain NaN or Inf");
    if (V.cols() == 0) throw Error(path + ": holds no vectors");
    if (single) *single = one;
    return V;
}

std::string start_phrase(const std::string& start_source) {
    return (start_source.rfind("--", 0) == 0 ? "started with " : "started along ") + start_source;
}

void check_qr_flags(Index qr_every, Index warmup) {
    try {
        check_qr_schedule(qr_every, warmup);
    } catch (const Error& e) {
        throw with_flag_names(e, {{"qr_every", "--qr-every"}, {"warmup", "--warmup"}});
    }
}

std::string json_line(const Json& j) {
    if (j.is_object()) {
        std::string s = "{";
        for (auto it = j.begin(); it != j.end(); ++it)
            s += (it == j.begin() ? "" : ", ") + json_line(Json(it.key())) + ": " + json_line(it.value());
        return s + "}";
    }
    if (j.is_array()) {
        std::string s = "[";
        for (auto it = j.begin(); it != j.end(); ++it) s += (it == j.begin() ? "" : ", ") + json_line(*it);
        return s + "]";
    }
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace tdyn::cli
