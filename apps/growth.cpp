// tdyn growth: the most a perturbation can grow over windows of a stored run. For each window
// [a, a + W) the top k singular values of M = J(a + W - 1) .. J(a) (J(t) = I - alpha H(theta_t),
// symmetric, so M^T applies the same J(t) in reverse order), by window_growth's alternating
// forward and backward QR passes over the window's thetas, replayed once and held in memory.
// Where a tangent vector carried along the run (tdyn lyapunov) has lost the growing direction,
// ln sigma_1 / W is what it could have found: an upper bound on its finite-time exponent there.
#include "commands.hpp"
#include "common.hpp"
#include "tdyn/ranks.hpp"

#include "tdyn/lyapunov.hpp"
#include "tdyn/run.hpp"

#include <algorithm>
#include <iostream>

namespace tdyn::cli {

namespace {

struct GrowthCliOptions {
    ProblemFlags problem;
    ProblemOptions given;
    std::string file;
    Index vectors = 1, block = 0, from = 0, to = -1, window = 0, passes = 200;
    double tol = 1e-6;
    std::uint64_t seed = 0;
    bool force = false, resume = false, quiet = false, json = false;
    CLI::Option *vectors_opt, *block_opt, *from_opt, *window_opt, *passes_opt, *tol_opt, *seed_opt;
};

const char* kGroup = "/growth";
const char* const kDatasets[] = {"/growth/from",      "/growth/to",        "/growth/passes", "/growth/converged",
                                 "/growth/log_sigma", "/growth/exponents", "/growth/error"};

struct Stopped {};  // a signal arrived mid-window

int run_growth(GrowthCliOptions& o) {
    refuse_problem_flags(o.given);
    share_file(o.file);
    const RunInfo info = RunReader(o.file).info();
    const TrainConfig& config = info.config;
    if (info.theta_steps.empty()) throw Error(o.file + ": the run stored no theta yet");
    if (info.status == RunStatus::Running)
        throw Error(o.file + ": status running (being written, or killed: finish it with tdyn train --resume first)");
    const Index P = config.architecture().num_params();
    const Index to = o.to < 0 ? info.last_step : o.to;

    WindowGrowthOptions wo;
    Index from = o.from, W = o.window, start = o.from;
    bool have_group = false;
    hsize_t resume_rows = 0;
    {
        h5::File f = h5::File::open_read(o.file);
        have_group = f.exists(kGroup);
        if (o.resume) {
            if (!have_group) throw Error("--resume: " + o.file + " holds no /growth group to continue");
            wo.vectors = f.attr_int(kGroup, "vectors");
            wo.block = f.attr_int(kGroup, "block");
            wo.max_passes = f.attr_int(kGroup, "max_passes");
            wo.tol = f.attr_double(kGroup, "tol");
            wo.seed = std::uint64_t(f.attr_int(kGroup, "seed"));
            W = f.attr_int(kGroup, "window");
            from = f.attr_int(kGroup, "from");
            auto integer = [](Index x) { return std::to_string(x); };
            const std::vector<FlagCheck> table = {
                {o.vectors_opt, integer(o.vectors), integer(wo.vectors)},
                {o.block_opt, integer(o.block), integer(wo.block)},
                {o.from_opt, integer(o.from), integer(from)},
                {o.window_opt, integer(o.window), integer(W)},
                {o.passes_opt, integer(o.passes), integer(wo.max_passes)},
                {o.tol_opt, format_number(o.tol), format_number(wo.tol)},
                {o.seed_opt, std::to_string(o.seed), std::to_string(wo.seed)},
            };
            const std::string diff = flag_differences(table, "the stored analysis'");
            if (!diff.empty()) throw Error("--resume: " + o.file + ":/growth: " + diff + " (only --to may change)");
            // the windows whose every dataset has its row (a pass killed between two appends left
            // some one row longer; the rows past n are rewritten)
            hsize_t n = f.rows("/growth/to");
            for (const char* d : kDatasets) n = std::min(n, f.rows(d));
            resume_rows = n;
            start = n ? Index(f.read_vector("/growth/to")[Index(n) - 1]) : from;
        }
    }
    if (have_group && !o.resume && !o.force)
        throw Error(o.file + ": already holds /growth; --force replaces it, --resume continues it");
    if (!o.resume) {
        wo.vectors = o.vectors;
        wo.block = o.block_opt->count() ? o.block : std::min(P, 2 * o.vectors);
        wo.max_passes = o.passes;
        wo.tol = o.tol;
        wo.seed = o.seed_opt->count() ? o.seed : config.seed;
        if (W == 0) W = to - from;
    }
    if (wo.vectors > P)
        throw Error("--vectors " + std::to_string(wo.vectors) + ": k must be at most P = " + std::to_string(P));
    if (wo.block < wo.vectors || wo.block > P)
        throw Error("--block " + std::to_string(wo.block) + ": b must be between --vectors " +
                    std::to_string(wo.vectors) + " and P = " + std::to_string(P));
    if (from < 0 || from >= to)
        throw Error("--from " + std::to_string(from) + " --to " + std::to_string(to) + ": need 0 <= from < to");
    if (to > info.last_step)
        throw Error("--to " + std::to_string(to) + ": " + o.file + " ends at step " + std::to_string(info.last_step));
    if (start >= to) {
        std::cerr << "growth: " << o.file << ":/growth already covers steps " << from << ".." << start << "\n";
        return 0;
    }
    if (W < 1 || (to - from) % W != 0)
        throw Error("--window " + std::to_string(W) + ": must divide --to - --from = " + std::to_string(to - from));
    if (wo.max_passes < 2) throw Error("--passes " + std::to_string(wo.max_passes) + ": need at least 2");
    if (!(wo.tol > 0) || !std::isfinite(wo.tol)) throw Error("--tol: must be a positive number");

    auto data = std::make_shared<const Dataset>(load_config_data(config, o.problem.data_dir, ranks::comm()));
    Trainer trainer(config, data);
    Vector theta;
    {
        RunReader reader(o.file);
        theta = reader.theta(start, trainer);
    }
    const std::atomic<bool>* stop = stop_on_signals();
    std::vector<Vector> thetas(static_cast<std::size_t>(W));
    // theta_a .. theta_{a+W-1} held; theta becomes theta_{a+W} for the next window. The replay must
    // land on every stored theta it passes bit for bit (same build, same thread chunks): the first
    // step where it does not is reported, as tdyn lyapunov does.
    Index mismatched = -1;
    auto warn_mismatch = [&] {
        if (mismatched >= 0)
            std::cerr << "tdyn: warning: the replayed theta at step " << mismatched << " differs from the stored one "
                      << "(a different build, thread count or MPI rank count?); /growth is of the replayed "
                         "trajectory\n";
    };
    auto replay = [&](Index a) {
        for (Index s = 0; s < W; ++s) {
            if (stop && stop->load()) throw Stopped{};
            thetas[std::size_t(s)] = theta;
            const StepStats st = trainer.step(a + s, theta);
            if (!st.finite())
                throw Error(o.file + ": the replayed loss is not finite at step " + std::to_string(a + s));
            const Index t = a + s + 1;
            if (mismatched < 0 && std::binary_search(info.theta_steps.begin(), info.theta_steps.end(), t) &&
                RunReader(o.file).stored_theta(t) != theta)
                mismatched = t;
        }
    };
    try {
        replay(start);  // before anything is written: a replay that fails leaves the file as it was
    } catch (const Stopped&) {
        warn_mismatch();
        std::cerr << "tdyn: interrupted before the first window; " << o.file << " is as it was\n";
        return kExitInterrupted;
    }
    {  // everything is checked: only now is the file written
        h5::File f = h5::File::open_write(o.file);
        if (have_group && !o.resume) f.remove(kGroup);
        if (o.resume)
            for (const char* d : kDatasets) f.truncate_rows(d, resume_rows);
        if (!o.resume) {
            f.ensure_group(kGroup);
            for (const char* n : {"/growth/from", "/growth/to", "/growth/passes", "/growth/converged"})
                f.create_series_int(n);
            for (const char* n : {"/growth/log_sigma", "/growth/exponents", "/growth/error"})
                f.create_series(n, hsize_t(wo.vectors));
            f.set_attr(kGroup, "vectors", std::int64_t(wo.vectors));
            f.set_attr(kGroup, "block", std::int64_t(wo.block));
            f.set_attr(kGroup, "window", std::int64_t(W));
            f.set_attr(kGroup, "from", std::int64_t(from));
            f.set_attr(kGroup, "max_passes", std::int64_t(wo.max_passes));
            f.set_attr(kGroup, "tol", wo.tol);
            f.set_attr(kGroup, "seed", std::int64_t(wo.seed));
            f.set_attr(kGroup, "alpha", config.lr);
        }
    }
    const bool talk = !o.quiet && !o.json;
    if (talk)
        std::cerr << "growth: top " << wo.vectors << " singular value(s) of J over windows of " << W << " steps, "
                  << start << ".." << to << ", " << o.file << "\n";
    Json rows = Json::array();
    for (Index a = start; a < to; a += W) {
        auto on_product = [&](Index applied) {
            if (stop && stop->load()) throw Stopped{};
            if (talk && applied % W == 0)
                std::cerr << "growth: window " << a << ".." << a + W << ", sweep " << applied / W << " done\n";
        };
        WindowGrowth g;
        try {
            if (a > start) replay(a);
            g = trajectory_window_growth(trainer, a, thetas, config.lr, wo, on_product);
        } catch (const Stopped&) {
            warn_mismatch();
            std::cerr << "tdyn: interrupted in window " << a << ".." << a + W << "; " << o.file
                      << " holds the windows before it; continue with: tdyn growth " << o.file << " --resume\n";
            return kExitInterrupted;
        }
        const Vector ex = g.log_sigma / double(W), err = g.error / double(W);  // per step
        {
            h5::File f = h5::File::open_write(o.file);
            f.append_int("/growth/from", a);
            f.append_int("/growth/to", a + W);
            f.append("/growth/log_sigma", g.log_sigma);
            f.append("/growth/exponents", ex);
            f.append("/growth/error", g.error);
            f.append_int("/growth/passes", g.passes);
            f.append_int("/growth/converged", g.converged ? 1 : 0);
        }
        if (o.json)
            rows.push_back({{"from", a},
                            {"to", a + W},
                            {"exponents", std::vector<double>(ex.begin(), ex.end())},
                            {"error", std::vector<double>(err.begin(), err.end())},
                            {"passes", g.passes},
                            {"products", g.products},
                            {"converged", g.converged}});
        else if (!o.quiet) {
            std::cout.precision(8);
            std::cout << "steps " << a << ".." << a + W << ": ln sigma / W  " << ex.transpose() << "  (" << g.passes
                      << " sweeps, " << g.products << " products, "
                      << (g.converged ? "converged" : "NOT converged: error per step ")
                      << (g.converged ? "" : format_number(g.error.maxCoeff() / double(W))) << ")\n";
        }
    }
    warn_mismatch();
    if (o.json) std::cout << json_line({{"file", o.file}, {"window", W}, {"windows", rows}}) << "\n";
    return 0;
}

}  // namespace

void setup_growth(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<GrowthCliOptions>();
    CLI::App* cmd =
        app.add_subcommand("growth",
                           "the most a perturbation can grow over windows of a stored run: top k singular values of "
                           "J(a+W-1) .. J(a), theta replayed");
    cmd->add_option("RUN", o->file, "run file; results go to its /growth group")->required()->check(CLI::ExistingFile);
    o->given = add_problem_flags(cmd, o->problem);
    o->vectors_opt = cmd->add_option("--vectors", o->vectors, "k singular values per window")
                         ->check(Positive)
                         ->capture_default_str();
    o->block_opt = cmd->add_option("--block", o->block,
                                   "b >= k vectors in the QR passes (default 2k); a pass costs W products of width b")
                       ->check(Positive);
    o->from_opt = cmd->add_option("--from", o->from, "T0: the first window starts at step T0")
                      ->check(NonNegative)
                      ->capture_default_str();
    cmd->add_option("--to", o->to, "T1: the last window ends at T1 (default: the run's last step)")->check(NonNegative);
    o->window_opt = cmd->add_option("--window", o->window,
                                    "W steps per window, dividing T1 - T0 (default: one window T0..T1); the W "
                                    "thetas of a window are held in memory (W x P x 8 bytes)")
                        ->check(Positive);
    o->passes_opt =
        cmd->add_option("--passes", o->passes,
                        "at most N sweeps per window (>= 2; a sweep is W steps): QR passes of width b; where "
                        "the top values cluster, after the first two, Lanczos on M^T M (two sweeps of width 1 "
                        "per product)")
            ->capture_default_str();
    o->tol_opt =
        cmd->add_option(
               "--tol", o->tol,
               "converged when every ln sigma_i / W has an estimated error below TOL (QR passes: the "
               "last change / (1 - its rate); Lanczos: the residual bound); /growth/error holds it per window, "
               "not per step")
            ->capture_default_str();
    o->seed_opt = cmd->add_option("--seed", o->seed, "seed of the random start basis (default: the run's seed)");
    auto* force = cmd->add_flag("--force", o->force, "replace an existing /growth group");
    cmd->add_flag("--resume", o->resume,
                  "continue the stored /growth analysis after its last window (to --to; other flags given must "
                  "equal the stored settings)")
        ->excludes(force);
    cmd->add_flag("--json", o->json, "print the result as one JSON object");
    cmd->add_flag("--quiet", o->quiet, "no progress output");
    cmd->callback([o, &exit_code] { exit_code = run_growth(*o); });
}

}  // namespace tdyn::cli
