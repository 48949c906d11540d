// tdyn response: d<Phi>/d gamma, the derivative of the long-time average of the training loss
// (or the test loss) with respect to the learning rate or the weight decay, along a stored
// full-batch run: the unrolled adjoint, FAR (shadowing + unstable parts), the shadowing part
// alone, and the brute check by an ensemble of finite differences. Results go to
// /response/PARAM/OBSERVABLE in the run file (docs/FORMAT.md, docs/RESPONSE.md).
#include "commands.hpp"
#include "common.hpp"

#include "tdyn/response.hpp"
#include "tdyn/run.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <unistd.h>

namespace tdyn::cli {

namespace {

struct ResponseCliOptions {
    ProblemFlags problem;
    ProblemOptions given;
    std::string file, param, observable = "loss", method = "all", test_data;
    Index from = 0, to = -1, unstable = -1, window = 10, segment = 20, ensemble = 8, test_samples = 1000;
    Index burn_in = 200, burn_in_vectors = 8;
    double check_fd = 0, kick = 1e-8;
    std::uint64_t seed = 0;
    bool force = false, quiet = false, json = false;
};

/// Progress of each phase with its ETA, on stderr: rewritten in place on a terminal, a line
/// every ~10 s otherwise (as Progress does for training steps).
ResponseProgress phase_progress(bool quiet) {
    if (quiet) return {};
    using Clock = std::chrono::steady_clock;
    struct State {
        std::string phase;
        Clock::time_point start, last;
        bool tty = isatty(fileno(stderr));
    };
    auto st = std::make_shared<State>();
    return [st](const std::string& phase, Index done, Index total) {
        const auto now = Clock::now();
        if (phase != st->phase) st->phase = phase, st->start = now, st->last = now - std::chrono::hours(1);
        const double since = std::chrono::duration<double>(now - st->last).count();
        if (!(done == total || (st->tty ? since > 0.1 : since > 10.0))) return;
        st->last = now;
        const double elapsed = std::chrono::duration<double>(now - st->start).count();
        const double eta = done > 0 ? elapsed * double(total - done) / double(done) : 0;
        std::fprintf(stderr, "%sresponse: %s %lld/%lld  ETA %d:%02d%s", st->tty ? "\r" : "", phase.c_str(),
                     (long long)done, (long long)total, int(eta) / 60, int(eta) % 60,
                     st->tty ? (done == total ? "\033[K\n" : "\033[K") : "\n");
        std::fflush(stderr);
    };
}

/// <Phi> over steps 1..T of the map from theta (the FAR/unrolled convention).
double trajectory_average(ResponseMap& map, Vector theta, Index first, Index T) {
    double sum = 0;
    for (Index n = 0; n < T; ++n) {
        map.at(first + n, theta);
        if (n >= 1) sum += map.phi();
        theta = map.next();
        if (!theta.allFinite()) return std::nan("");
    }
    map.at(first + T, theta);
    return (sum + map.phi()) / double(T);
}

int run_response(ResponseCliOptions& o) {
    if (o.given.data->count() || o.given.arch->count() || o.given.samples->count() || o.given.activation->count() ||
        o.given.output->count())
        throw Error("--data/--arch/--samples/--activation/--output: a run file's problem is its own");
    const ResponseParam param = [&] {
        try {
            return parse_response_param(o.param);
        } catch (const Error&) {
            throw Error("--param: expected lr or weight-decay, found '" + o.param + "'");
        }
    }();
    const Observable observable = [&] {
        try {
            return parse_observable(o.observable);
        } catch (const Error&) {
            throw Error("--observable: expected loss or test-loss, found '" + o.observable + "'");
        }
    }();
    const bool do_unrolled = o.method == "unrolled" || o.method == "all";
    const bool do_far = o.method == "far" || o.method == "all";
    const bool do_shadowing = o.method == "shadowing" || o.method == "all";
    if (!do_unrolled && !do_far && !do_shadowing && o.method != "none")
        throw Error("--method: expected unrolled, far, shadowing, all or none, found '" + o.method + "'");

    const RunInfo info = RunReader(o.file).info();
    const TrainConfig& config = info.config;
    if (info.theta_steps.empty()) throw Error(o.file + ": the run stored no theta yet");
    if (info.status == RunStatus::Running)
        throw Error(o.file + ": status running (being written, or killed: finish it with tdyn train --resume first)");
    if (config.batch != 0)
        throw Error(o.file + ": mini-batch runs (batch " + std::to_string(config.batch) +
                    ") are not supported: tdyn response differentiates the full-batch map");
    const Index P = config.architecture().num_params();
    const Index to = o.to < 0 ? info.last_step : o.to;
    if (o.from < 0 || o.from >= to)
        throw Error("--from " + std::to_string(o.from) + " --to " + std::to_string(to) + ": need 0 <= from < to");
    if (to > info.last_step)
        throw Error("--to " + std::to_string(to) + ": " + o.file + " ends at step " + std::to_string(info.last_step));
    const Index T = to - o.from;
    if (o.window < 0) throw Error("--window " + std::to_string(o.window) + ": must be >= 0");
    if (o.segment < 1) throw Error("--segment " + std::to_string(o.segment) + ": must be at least 1");
    const Index K = (T - 2 * o.window) / o.segment;
    if ((do_far || do_shadowing) && K < 2)
        throw Error("--window " + std::to_string(o.window) + " --segment " + std::to_string(o.segment) +
                    ": FAR needs --to - --from >= 2 W + 2 S (" + std::to_string(T) + " steps given)");
    if (o.check_fd < 0 || !std::isfinite(o.check_fd))
        throw Error("--check-fd: H must be a positive number, found " + format_number(o.check_fd));
    const double gamma = param == ResponseParam::LearningRate ? config.lr : config.weight_decay;
    if (o.check_fd > 0 && !(gamma - o.check_fd >= 0))
        throw Error("--check-fd " + format_number(o.check_fd) + ": gamma - H must be >= 0 (the run's " + o.param +
                    " is " + format_number(gamma) + ")");
    if (o.ensemble < 2) throw Error("--ensemble " + std::to_string(o.ensemble) + ": must be at least 2");
    const std::string group = "/response/" + to_string(param) + "/" + to_string(observable);

    // U: the flag, else the number of positive exponents the run's /lyapunov group measured, else
    // estimated in a burn-in from theta_T0 (below, once the map exists).
    Index U = o.unstable;
    std::string unstable_source = U >= 0 ? "flag" : "";
    bool need_burn_in = false;
    {
        h5::File f = h5::File::open_read(o.file);
        if (f.exists(group) && !o.force) throw Error(o.file + ": already holds " + group + "; --force replaces it");
        if (U < 0 && (do_far || do_shadowing)) {
            if (f.exists("/lyapunov/exponents") && f.rows("/lyapunov/exponents") > 0) {
                const Vector ex = f.read_row("/lyapunov/exponents", f.rows("/lyapunov/exponents") - 1);
                U = 0;
                for (Index i = 0; i < ex.size(); ++i) U += std::isfinite(ex[i]) && ex[i] > 0;
                unstable_source = "lyapunov";
                if (U == ex.size())
                    std::cerr << "tdyn: warning: all " << U << " stored exponents are positive; U may be larger\n";
            } else {
                need_burn_in = true;
                unstable_source = "burn-in";
            }
        }
    }
    if (need_burn_in) {
        if (o.burn_in_vectors < 1 || o.burn_in_vectors > P)
            throw Error("--burn-in-vectors " + std::to_string(o.burn_in_vectors) +
                        ": must be between 1 and P = " + std::to_string(P));
        if (o.burn_in < 20 || o.burn_in > T)
            throw Error("--burn-in " + std::to_string(o.burn_in) +
                        ": must be between 20 and --to - --from = " + std::to_string(T) + " (or give --unstable U)");
    }
    if (U > P) throw Error("--unstable " + std::to_string(U) + ": must be at most P = " + std::to_string(P));

    auto data = std::make_shared<const Dataset>(load_config_data(config, o.problem.data_dir));
    std::optional<Dataset> test;
    if (observable == Observable::TestLoss) {
        const Index classes = config.architecture().outputs();
        if (!o.test_data.empty()) test = read_data_file(o.test_data, o.test_samples, classes);
        else if (config.data == "mnist" || config.data == "fashion-mnist")
            test = load_dataset(config.data, data_dir(o.problem.data_dir), o.test_samples, classes, true);
        else
            throw Error("--observable test-loss: the run's data is a file (" + config.data +
                        "); give --test-data FILE");
    }
    Trainer trainer(config, data);
    Vector theta0;
    {
        RunReader reader(o.file);
        theta0 = reader.theta(o.from, trainer);
    }
    auto make_map = [&](double alpha, double lambda) {
        return std::make_unique<GradientDescentMap>(config.architecture(), *data, alpha, lambda, param, observable,
                                                    test ? &*test : nullptr, config.precision, config.x_path);
    };
    auto map = make_map(config.lr, config.weight_decay);
    const ResponseProgress progress = phase_progress(o.quiet || o.json);
    std::optional<UnstableEstimate> burn;
    if (need_burn_in) {
        // M tangent vectors over the first B steps of the window, QR every 10 steps, the first
        // quarter (rounded to a multiple of 10) not counted: U = #{exponents > 0}.
        BurnInOptions bo;
        bo.vectors = o.burn_in_vectors;
        bo.steps = o.burn_in;
        bo.qr_every = 10;
        bo.warmup = o.burn_in / 40 * 10;  // B >= 20, so B - warmup >= q
        bo.seed = o.seed;
        burn = estimate_unstable_dim(*map, theta0, o.from, bo, progress);
        U = burn->unstable;
        if (U == bo.vectors)
            std::cerr << "tdyn: warning: all " << U
                      << " burn-in exponents are positive; U may be larger (raise --burn-in-vectors)\n";
    }

    Json j = {{"file", o.file},
              {"param", to_string(param)},
              {"observable", to_string(observable)},
              {"from", o.from},
              {"to", to}};
    if (do_far || do_shadowing) {
        j["unstable_dim"] = U;
        j["unstable_source"] = unstable_source;
    }
    if (burn) j["burn_in_exponents"] = std::vector<double>(burn->exponents.begin(), burn->exponents.end());
    std::optional<UnrolledResult> unrolled;
    std::optional<FarResult> far, shadowing;
    if (do_unrolled) {
        unrolled = unrolled_response(*map, theta0, o.from, T, std::max<Index>(1, o.segment), progress);
        j["unrolled"] = {{"derivative", unrolled->derivative},
                         {"average", unrolled->average},
                         {"growth_rate", unrolled->growth_rate},
                         {"adjoint_norm_first", unrolled->adjoint_norm[0]}};
    }
    FarOptions fo;
    fo.unstable = U;
    fo.segment = o.segment;
    fo.window = o.window;
    fo.segments = K;
    fo.seed = o.seed;
    Index far_gradients = 0, far_hvps = 0;
    if (do_far) {
        const Index g0 = map->gradients(), h0 = map->hvps();
        far = far_response(*map, theta0, o.from, fo, progress);
        far_gradients = map->gradients() - g0, far_hvps = map->hvps() - h0;
        j["far"] = {{"derivative", far->derivative},
                    {"shadowing", far->shadowing},
                    {"unstable", far->unstable},
                    {"stderr", far->stderr_},
                    {"average", far->average},
                    {"unstable_dim", U},
                    {"steps", far->steps},
                    {"exponents", std::vector<double>(far->exponents.begin(), far->exponents.end())},
                    {"hvps_per_step", double(far_hvps) / double(far->steps)},
                    {"evaluations_per_step", double(far_gradients) / double(far->steps)}};
    }
    if (do_shadowing) {
        fo.unstable_part = false;
        shadowing = far_response(*map, theta0, o.from, fo, progress);
        j["shadowing"] = {{"derivative", shadowing->shadowing}, {"stderr", batch_stderr(shadowing->segment_shadowing)}};
    }
    Vector quotients;
    double fd = 0, fd_stderr = 0;
    if (o.check_fd > 0) {
        // N pairs at gamma +- H from theta_T0 plus one tiny random kick per pair (common to the pair).
        quotients.resize(o.ensemble);
        auto plus = param == ResponseParam::LearningRate ? make_map(config.lr + o.check_fd, config.weight_decay)
                                                         : make_map(config.lr, config.weight_decay + o.check_fd);
        auto minus = param == ResponseParam::LearningRate ? make_map(config.lr - o.check_fd, config.weight_decay)
                                                          : make_map(config.lr, config.weight_decay - o.check_fd);
        std::mt19937_64 gen(o.seed + 77);
        std::normal_distribution<double> N01;
        for (Index r = 0; r < o.ensemble; ++r) {
            Vector kick(P);
            for (Index i = 0; i < P; ++i) kick[i] = N01(gen);
            const Vector start = theta0 + o.kick * kick;
            const double ap = trajectory_average(*plus, start, o.from, T);
            const double am = trajectory_average(*minus, start, o.from, T);
            quotients[r] = (ap - am) / (2 * o.check_fd);
            if (progress) progress("finite differences", r + 1, o.ensemble);
        }
        fd = quotients.mean();
        fd_stderr = std::sqrt((quotients.array() - fd).square().sum() / double(o.ensemble - 1) / double(o.ensemble));
        j["fd_derivative"] = fd;
        j["fd_stderr"] = fd_stderr;
        j["fd_h"] = o.check_fd;
        j["ensemble"] = o.ensemble;
    }

    // Everything is computed: only now is the file opened for writing.
    {
        h5::File f = h5::File::open_write(o.file);
        if (f.exists(group)) f.remove(group);
        f.ensure_group(group);
        f.set_attr(group, "from", std::int64_t(o.from));
        f.set_attr(group, "to", std::int64_t(to));
        f.set_attr(group, "command_line", command_line());
        if (do_far || do_shadowing) f.set_attr(group, "unstable_source", unstable_source);
        if (burn) f.write_vector(group + "/burn_in_exponents", burn->exponents);
        if (unrolled) {
            const std::string g = group + "/unrolled";
            f.write_vector(g + "/adjoint_norm", unrolled->adjoint_norm);
            f.set_attr(g, "derivative", unrolled->derivative);
            f.set_attr(g, "average", unrolled->average);
            f.set_attr(g, "growth_rate", unrolled->growth_rate);
        }
        auto write_far = [&](const std::string& g, const FarResult& r, bool full) {
            f.write_vector(g + "/segment_shadowing", r.segment_shadowing);
            if (full) f.write_vector(g + "/segment_unstable", r.segment_unstable);
            f.write_vector(g + "/exponents", r.exponents);
            f.set_attr(g, "derivative", full ? r.derivative : r.shadowing);
            f.set_attr(g, "shadowing", r.shadowing);
            if (full) f.set_attr(g, "unstable", r.unstable);
            f.set_attr(g, "stderr", full ? r.stderr_ : batch_stderr(r.segment_shadowing));
            f.set_attr(g, "average", r.average);
            f.set_attr(g, "unstable_dim", std::int64_t(U));
            f.set_attr(g, "window", std::int64_t(o.window));
            f.set_attr(g, "segment", std::int64_t(o.segment));
            f.set_attr(g, "segments", std::int64_t(K));
            f.set_attr(g, "seed", std::int64_t(o.seed));
        };
        if (far) write_far(group + "/far", *far, true);
        if (shadowing) write_far(group + "/shadowing", *shadowing, false);
        if (o.check_fd > 0) {
            const std::string g = group + "/fd";
            f.write_vector(g + "/quotients", quotients);
            f.set_attr(g, "fd_derivative", fd);
            f.set_attr(g, "fd_stderr", fd_stderr);
            f.set_attr(g, "h", o.check_fd);
            f.set_attr(g, "kick", o.kick);
        }
        f.flush();
    }

    if (o.json) {
        std::cout << json_line(j) << "\n";
        return 0;
    }
    std::cout.precision(6);
    std::cout << o.file << ": d<" << to_string(observable) << ">/d " << to_string(param) << " over steps " << o.from
              << ".." << to << "\n";
    if (burn) {
        std::cout << "  U = " << U << " from a " << o.burn_in << "-step burn-in, exponents";
        for (Index i = 0; i < burn->exponents.size(); ++i) std::cout << " " << burn->exponents[i];
        std::cout << "\n";
    }
    if (unrolled)
        std::cout << "  unrolled   " << unrolled->derivative << "  (|adjoint| grows " << unrolled->growth_rate
                  << " per step)\n";
    if (far)
        std::cout << "  FAR        " << far->derivative << " +- " << far->stderr_ << "  = shadowing " << far->shadowing
                  << " + unstable " << far->unstable << "  (U = " << U << ", W = " << o.window << ", S = " << o.segment
                  << ", " << far->steps << " steps)\n";
    if (shadowing) std::cout << "  shadowing  " << shadowing->shadowing << "\n";
    if (o.check_fd > 0)
        std::cout << "  finite differences " << fd << " +- " << fd_stderr << "  (H = " << o.check_fd << ", "
                  << o.ensemble << " pairs)\n";
    return 0;
}

}  // namespace

void setup_response(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<ResponseCliOptions>();
    CLI::App* cmd = app.add_subcommand(
        "response",
        "d<Phi>/d gamma of a stored full-batch run: unrolled adjoint, FAR (shadowing + unstable), finite differences");
    cmd->add_option("RUN", o->file, "run file; results go to its /response group")
        ->required()
        ->check(CLI::ExistingFile);
    o->given = add_problem_flags(cmd, o->problem);
    cmd->add_option("--param", o->param, "gamma: lr (alpha) or weight-decay (lambda)")->required();
    cmd->add_option("--observable", o->observable, "Phi: loss (training, the data term) or test-loss")
        ->capture_default_str();
    cmd->add_option("--test-data", o->test_data,
                    "HDF5 data file of the test loss (default: the data set's test split)");
    cmd->add_option("--test-samples", o->test_samples, "the first N test samples (0 = all)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--from", o->from, "T0: start at theta_T0 (held fixed)")->capture_default_str();
    cmd->add_option("--to", o->to, "T1: last step (default: the run's last step)");
    cmd->add_option("--method", o->method, "unrolled, far, shadowing, all or none")->capture_default_str();
    cmd->add_option("--unstable", o->unstable,
                    "U tangent vectors (default: the positive exponents of the run's /lyapunov group, else "
                    "of a burn-in)");
    cmd->add_option("--burn-in", o->burn_in,
                    "B: without --unstable and /lyapunov, U counts the positive exponents over steps T0..T0+B")
        ->capture_default_str();
    cmd->add_option("--burn-in-vectors", o->burn_in_vectors, "M tangent vectors of the burn-in (U <= M)")
        ->capture_default_str();
    cmd->add_option("--window", o->window, "W: psi_n sums Phi_{n-W} .. Phi_{n+W}")->capture_default_str();
    cmd->add_option("--segment", o->segment, "S steps per segment (QR at each end)")->capture_default_str();
    cmd->add_option("--seed", o->seed, "seed of the tangent basis and of the finite-difference kicks")
        ->capture_default_str();
    cmd->add_option("--check-fd", o->check_fd, "also finite differences at gamma +- H (0 = none)")
        ->capture_default_str();
    cmd->add_option("--ensemble", o->ensemble, "N trajectory pairs of the finite differences")->capture_default_str();
    cmd->add_option("--kick", o->kick, "size of the random kick of theta_T0 per pair")->capture_default_str();
    cmd->add_flag("--force", o->force, "replace an existing /response/PARAM/OBSERVABLE group");
    cmd->add_flag("--json", o->json, "print the result as one JSON object");
    cmd->add_flag("--quiet", o->quiet, "no progress output");
    cmd->callback([o, &exit_code] { exit_code = run_response(*o); });
}

}  // namespace tdyn::cli
