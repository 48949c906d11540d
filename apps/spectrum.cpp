// tdyn spectrum: eigenvalues of H and J = I - alpha H (and the trace and spectral density of
// H) at stored steps of a run, written to its /spectrum group, or at a params file's theta.
#include "commands.hpp"
#include "common.hpp"
#include "tdyn/ranks.hpp"
#include "values.hpp"

#include "tdyn/run.hpp"
#include "tdyn/spectrum.hpp"
#include "tdyn/spectrum_plugin.hpp"

#include <algorithm>
#include <iostream>
#include <set>

namespace tdyn::cli {

namespace {

struct SpectrumCliOptions {
    ProblemFlags problem;
    ProblemOptions given;
    std::string file, steps, which = "both", solver = "auto";
    Index eigs = 1, krylov = 0, max_iter = 1000, probes = 30, lanczos_steps = 80, grid = 400;
    double tol = 1e-6, lr = 0.1, sigma = 0;
    std::uint64_t seed = 0;
    bool vectors = false, json = false, trace = false, density = false, quiet = false;
    CLI::Option* lr_opt;
};

void print_analysis(const std::string& file, Index step, const SpectrumAnalysis& a, double alpha, bool json) {
    if (json) {
        auto list = [](const Vector& v) { return std::vector<double>(v.begin(), v.end()); };
        Json j = {{"file", file},
                  {"step", step},
                  {"alpha", alpha},
                  {"hessian_top", list(a.top.values)},
                  {"hessian_bottom", list(a.bottom.values)},
                  {"residual_top", list(a.top.residuals)},
                  {"residual_bottom", list(a.bottom.residuals)},
                  {"jacobian", list(a.jacobian)},
                  {"lambda_max", a.stability.lambda_max},
                  {"two_over_alpha", a.stability.two_over_alpha},
                  {"unstable", a.stability.unstable},
                  {"max_abs_mu", a.stability.max_abs_mu},
                  {"matvecs", a.matvecs},
                  {"converged", a.converged}};
        if (a.trace.probes) {
            j["trace"] = a.trace.trace;
            j["trace_standard_error"] = a.trace.standard_error;
        }
        std::cout << json_line(j) << "\n";
        return;
    }
    std::cout.precision(10);
    std::cout << "step " << step << ":";
    if (a.top.values.size())
        std::cout << "\n  H top     " << a.top.values.transpose() << "   (residuals " << a.top.residuals.transpose()
                  << ")";
    if (a.bottom.values.size())
        std::cout << "\n  H bottom  " << a.bottom.values.transpose() << "   (residuals "
                  << a.bottom.residuals.transpose() << ")";
    std::cout << "\n  J extreme " << a.jacobian.transpose() << "\n  stability lambda_max " << a.stability.lambda_max
              << " vs 2/alpha " << a.stability.two_over_alpha << "; " << a.stability.unstable
              << " eigenvalue(s) of J found outside the unit circle; max |mu| " << a.stability.max_abs_mu
              << (a.bottom.values.size() ? "" : " (top of H only: negative eigenvalues of H also give |mu| > 1)")
              << "\n";
    if (a.trace.probes)
        std::cout << "  trace     " << a.trace.trace << " +- " << a.trace.standard_error << " (" << a.trace.probes
                  << " probes)\n";
    if (a.density.probes)
        std::cout << "  density   " << a.density.grid.size() << " grid points, sigma " << a.density.sigma << "\n";
    std::cout << "  " << a.matvecs << " HVPs"
              << (a.converged ? ""
                              : ", NOT CONVERGED (" + to_string(a.top.status) + "/" + to_string(a.bottom.status) + ")")
              << "\n";
}

int run_spectrum(SpectrumCliOptions& o) {
    const Ends ends = parse_which(o.which);
    if (o.solver != "auto" && o.solver != "lanczos" && o.solver != "davidson")
        throw Error("--solver: expected auto, lanczos or davidson, found '" + o.solver + "'");
    if (!(o.tol > 0)) throw Error("--tol: must be positive");
    if (!(o.lr > 0)) throw Error("--lr: must be positive, found " + format_number(o.lr));
    SpectrumOptions so;
    so.eig.eigs = o.eigs;
    so.eig.krylov = o.krylov;
    so.eig.tol = o.tol;
    so.eig.max_iter = o.max_iter;
    // auto: block Davidson for K >= 2 (its block HVPs made the top 5 at k = 60000 1.3-1.45x
    // faster than Lanczos, the bottom 5 equally fast), Lanczos for K = 1 (docs/SPECTRUM_BENCH.md).
    so.eig.solver =
        o.solver == "davidson" || (o.solver == "auto" && o.eigs >= 2) ? EigenSolver::Davidson : EigenSolver::Lanczos;
    so.ends = ends;
    so.trace = o.trace;
    so.density = o.density;
    so.probes = o.probes;
    so.lanczos_steps = o.lanczos_steps;
    so.grid = o.grid;
    so.sigma = o.sigma;
    so.seed = o.seed;

    share_file(o.file);  // MPI: the other ranks read and write rank 0's copy, in memory
    const bool is_run = [&] {
        h5::File f = h5::File::open_read(o.file, true);
        return f.has_attr("/", "format") && f.attr_string("/", "format") == kRunFormat;
    }();
    if (!is_run) {
        TrainConfig config;
        apply_problem_flags(o.problem, o.given, config, false);
        const Architecture arch = config.architecture();
        check_spectrum_options(so, arch.num_params());
        const Vector theta = read_params(o.file, arch);  // before the data: a bad file fails fast
        const Dataset data = load_dataset(config.data, data_dir(o.problem.data_dir), config.samples, arch.outputs(),
                                          false, ranks::comm());
        InputMatrix X(data.X, config.x_path, config.precision, 0.3, data.comm);
        Evaluation e(arch, X, data.T, theta, EvaluationOptions{0.0, data.comm});
        print_analysis(o.file, -1, analyse_spectrum(e, so, o.lr, nullptr), o.lr, o.json);
        return 0;
    }

    RunInfo info = RunReader(o.file).info();
    if (o.given.data->count() || o.given.arch->count() || o.given.samples->count() || o.given.activation->count() ||
        o.given.output->count())
        throw Error(
            "--data/--arch/--samples/--activation/--output: a run file's problem is its own; these flags are for params files");
    const TrainConfig config = info.config;
    const double alpha = o.lr_opt->count() ? o.lr : config.lr;
    if (info.theta_steps.empty()) throw Error(o.file + ": the run stored no theta yet");
    const std::vector<Index> steps = parse_steps(o.steps, info.theta_steps, info.last_step);
    check_spectrum_options(so, config.architecture().num_params());
    if (steps.empty()) throw Error("--steps '" + o.steps + "': no step to analyse");
    SpectrumSettings settings;
    settings.steps = steps;
    settings.options = so;
    settings.alpha = alpha;
    settings.vectors = o.vectors;
    std::string group;
    {
        // The group of this configuration (K, which), and what appending to it needs, checked
        // before any work: bad input leaves the file as it was.
        h5::File f = h5::File::open_read(o.file, true);
        group = spectrum_group(f, o.eigs, ends);
        SpectrumPlugin(settings, group).check(f);
    }
    if (info.status == RunStatus::Running)
        std::cerr << "tdyn: note: " << o.file
                  << " has status running; if it is being written, writing the spectrum will fail\n";

    auto data = std::make_shared<const Dataset>(load_config_data(config, o.problem.data_dir, ranks::comm()));
    Trainer trainer(config, data);  // regenerates theta at steps that are not stored
    Vector theta;
    {
        RunReader reader(o.file);  // closed before the file is opened for writing
        theta = reader.theta(*std::min_element(steps.begin(), steps.end()), trainer);
    }
    Index written = 0;
    SpectrumPlugin spectrum(settings, group, [&](Index t, const SpectrumAnalysis& a) {
        print_analysis(o.file, t, a, alpha, o.json);
        ++written;
    });
    // The spectrum is of the full-batch loss, also for mini-batch runs (Trainer::full_batch_evaluation).
    start_analyses({&spectrum}, 0, theta);
    h5::File f = h5::File::open_write(o.file);
    begin_analyses(f, {&spectrum}, 0, theta, false);
    DriveOptions d;
    d.from = *std::min_element(steps.begin(), steps.end());
    d.to = *std::max_element(steps.begin(), steps.end());
    d.stored = info.theta_steps;
    drive(trainer, f, {&spectrum}, theta, d);
    f = h5::File();
    if (!o.json && !o.quiet) std::cerr << "wrote " << written << " step(s) to " << o.file << ":" << group << "\n";
    return 0;
}

}  // namespace

void setup_spectrum(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<SpectrumCliOptions>();
    CLI::App* cmd = app.add_subcommand(
        "spectrum",
        "eigenvalues of H and J = I - alpha H (Spectra: Lanczos or block Davidson), trace and spectral density of H");
    cmd->add_option("FILE", o->file,
                    "run file (results go to its /spectrum group) or params file (problem from the flags)")
        ->required()
        ->check(CLI::ExistingFile);
    o->given = add_problem_flags(cmd, o->problem);
    cmd->add_option(
        "--steps", o->steps,
        "run files: last (default), stored, or a list like 0,10,50:100:10; steps that are not stored are replayed");
    cmd->add_option("--eigs", o->eigs, "K eigenvalues at each end")->check(Positive)->capture_default_str();
    cmd->add_option("--which", o->which, "top, bottom or both ends of H's spectrum")->capture_default_str();
    cmd->add_flag("--vectors", o->vectors, "also store the eigenvectors (/spectrum/vectors_top, vectors_bottom)");
    cmd->add_option("--tol", o->tol, "relative tolerance of the eigenvalues")->capture_default_str();
    cmd->add_option("--solver", o->solver, "auto (davidson for K >= 2, else lanczos), lanczos or davidson")
        ->capture_default_str();
    cmd->add_option("--krylov", o->krylov,
                    "Lanczos basis size (0 = max(2K+1, 20)); Davidson: largest search space (0 = 10 K)")
        ->check(NonNegative)
        ->capture_default_str();
    cmd->add_option("--max-iter", o->max_iter, "Lanczos restarts (Davidson iterations) before giving up")
        ->check(Positive)
        ->capture_default_str();
    o->lr_opt = cmd->add_option("--lr", o->lr, "alpha of J = I - alpha H (default: the run's; 0.1 for params files)");
    cmd->add_flag("--trace", o->trace, "Hutchinson estimate of tr H with its standard error");
    cmd->add_flag("--density", o->density, "spectral density of H by stochastic Lanczos quadrature");
    cmd->add_option("--probes", o->probes, "Rademacher probes for --trace and --density")
        ->check(Positive)
        ->capture_default_str();
    cmd->add_option("--lanczos-steps", o->lanczos_steps, "Lanczos steps per probe for --density")
        ->check(Positive)
        ->capture_default_str();
    cmd->add_option("--grid", o->grid, "grid points of the density")
        ->check(CLI::Range(2, 100000))
        ->capture_default_str();
    cmd->add_option("--sigma", o->sigma, "Gaussian broadening of the density (0 = range / 200)")->capture_default_str();
    cmd->add_option("--seed", o->seed, "seed of the probes")->capture_default_str();
    cmd->add_flag("--json", o->json, "one JSON object per step");
    cmd->add_flag("--quiet", o->quiet, "no messages on stderr");
    cmd->callback([o, &exit_code] { exit_code = run_spectrum(*o); });
}

}  // namespace tdyn::cli
