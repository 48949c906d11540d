// tdyn info: what a run file is and holds.
#include "commands.hpp"
#include "common.hpp"

#include "tdyn/run.hpp"

#include <cmath>
#include <iostream>

namespace tdyn::cli {

namespace {

struct InfoOptions {
    std::string file;
    bool json = false;
};

/// The last row of the analyses, for the summary lines.
struct Analyses {
    Index spectrum_rows = 0, spectrum_step = -1, unstable = 0;
    double lambda_max = NAN, two_over_alpha = NAN, max_abs_mu = NAN;
    bool converged = true, top_only = false;
    Index lyapunov_rows = 0, lyapunov_step = -1, lyapunov_from = 0, counted = 0;
    Vector exponents;
    double perturbation_exponent = NAN;
    bool lyapunov_complete = false;
};

Analyses read_analyses(h5::File& f) {
    Analyses a;
    if (f.exists("/spectrum/step") && f.rows("/spectrum/step") > 0) {
        const hsize_t n = f.rows("/spectrum/step"), j = n - 1;
        a.spectrum_rows = Index(n);
        a.spectrum_step = Index(f.read_row("/spectrum/step", j)[0]);
        a.lambda_max = f.read_row("/spectrum/lambda_max", j)[0];
        a.two_over_alpha = f.read_row("/spectrum/two_over_alpha", j)[0];
        a.unstable = Index(f.read_row("/spectrum/unstable", j)[0]);
        a.max_abs_mu = f.read_row("/spectrum/max_abs_mu", j)[0];
        a.converged = f.read_row("/spectrum/converged", j)[0] != 0;
        a.top_only = !f.read_row("/spectrum/hessian_bottom", j).array().isFinite().any();
    }
    if (f.exists("/lyapunov/step") && f.rows("/lyapunov/step") > 0) {
        const hsize_t n = f.rows("/lyapunov/step"), j = n - 1;
        a.lyapunov_rows = Index(n);
        a.lyapunov_step = Index(f.read_row("/lyapunov/step", j)[0]);
        a.lyapunov_from = f.attr_int("/lyapunov", "from");
        a.counted = std::max<Index>(0, a.lyapunov_step + 1 - a.lyapunov_from - f.attr_int("/lyapunov", "warmup"));
        a.exponents = f.read_row("/lyapunov/exponents", j);
        a.lyapunov_complete = f.exists("/lyapunov/basis");
        if (f.exists("/lyapunov/perturbation/step") && f.rows("/lyapunov/perturbation/step") > 0)
            a.perturbation_exponent = f.read_row("/lyapunov/perturbation/exponent", f.rows("/lyapunov/perturbation/step") - 1)[0];
    }
    return a;
}

int run_info(const InfoOptions& o) {
    RunReader r(o.file);
    const Analyses an = read_analyses(r.file());
    const RunInfo& i = r.info();
    const TrainConfig& c = i.config;
    const Architecture arch = c.architecture();
    const Index first_theta = i.theta_steps.empty() ? -1 : i.theta_steps.front();
    const Index last_theta = i.theta_steps.empty() ? -1 : i.theta_steps.back();
    if (o.json) {
        std::cout << "{\"file\": " << json_string(o.file) << ", \"format_version\": " << i.format_version
                  << ", \"tool_version\": " << json_string(i.tool_version)
                  << ", \"command_line\": " << json_string(i.command_line) << ", \"status\": " << json_string(to_string(i.status))
                  << ", \"diverged_at\": " << i.diverged_at << ", \"config\": {\"data\": " << json_string(c.data)
                  << ", \"samples\": " << c.samples << ", \"arch\": " << json_string(c.arch)
                  << ", \"parameters\": " << arch.num_params() << ", \"activation\": " << json_string(to_string(c.activation))
                  << ", \"output\": " << json_string(to_string(c.output)) << ", \"alpha\": " << json_number(c.lr)
                  << ", \"steps\": " << c.steps << ", \"batch\": " << c.batch << ", \"seed\": " << c.seed
                  << ", \"init\": " << json_string(c.init) << ", \"save_theta_every\": " << c.save_theta_every
                  << ", \"precision\": " << json_string(c.precision == Precision::F32 ? "f32" : "f64") << "}"
                  << ", \"rows\": " << i.rows << ", \"last_step\": " << i.last_step
                  << ", \"last_loss\": " << json_number(i.last_loss) << ", \"last_accuracy\": " << json_number(i.last_accuracy)
                  << ", \"theta_stored\": " << i.theta_steps.size() << ", \"theta_first_step\": " << first_theta
                  << ", \"theta_last_step\": " << last_theta << ", \"has_spectrum\": " << (i.has_spectrum ? "true" : "false")
                  << ", \"has_lyapunov\": " << (i.has_lyapunov ? "true" : "false");
        if (an.spectrum_rows)
            std::cout << ", \"spectrum\": {\"rows\": " << an.spectrum_rows << ", \"step\": " << an.spectrum_step
                      << ", \"lambda_max\": " << json_number(an.lambda_max) << ", \"two_over_alpha\": " << json_number(an.two_over_alpha)
                      << ", \"unstable\": " << an.unstable << ", \"max_abs_mu\": " << json_number(an.max_abs_mu)
                      << ", \"converged\": " << (an.converged ? "true" : "false")
                      << ", \"bottom_computed\": " << (an.top_only ? "false" : "true") << "}";
        if (an.lyapunov_rows) {
            std::cout << ", \"lyapunov\": {\"rows\": " << an.lyapunov_rows << ", \"step\": " << an.lyapunov_step
                      << ", \"from\": " << an.lyapunov_from << ", \"counted_steps\": " << an.counted << ", \"exponents\": [";
            for (Index k = 0; k < an.exponents.size(); ++k) std::cout << (k ? ", " : "") << json_number(an.exponents[k]);
            std::cout << "], \"perturbation_exponent\": " << json_number(an.perturbation_exponent)
                      << ", \"complete\": " << (an.lyapunov_complete ? "true" : "false") << "}";
        }
        std::cout << "}\n";
        return 0;
    }
    std::cout << o.file << ": tdyn run (format " << i.format_version << ", written by tdyn " << i.tool_version << ")\n"
              << "  command     " << i.command_line << "\n"
              << "  status      " << to_string(i.status);
    if (i.status == RunStatus::Diverged) std::cout << " at step " << i.diverged_at;
    if (i.status == RunStatus::Running) std::cout << " (still being written, or killed: resume with tdyn train --out " << o.file << " --resume)";
    std::cout << "\n  network     " << c.arch << " (" << arch.num_params() << " parameters), " << to_string(c.activation)
              << " hidden, " << to_string(c.output) << "\n"
              << "  data        " << c.data << ", " << (c.samples ? std::to_string(c.samples) : std::string("all")) << " samples, "
              << (c.batch ? "mini-batch " + std::to_string(c.batch) : std::string("full batch")) << "\n"
              << "  training    alpha " << c.lr << " (2/alpha = " << 2 / c.lr << "), " << c.steps << " steps, seed " << c.seed
              << (c.init.empty() ? "" : ", init " + c.init) << ", " << (c.precision == Precision::F32 ? "f32" : "f64") << "\n"
              << "  trajectory  " << i.rows << " rows";
    if (i.rows) std::cout << " (steps 0.." << i.last_step << "), last loss " << i.last_loss << ", accuracy " << i.last_accuracy;
    std::cout << "\n  theta       " << i.theta_steps.size() << " stored";
    if (!i.theta_steps.empty()) std::cout << " (steps " << first_theta << ".." << last_theta << ", every " << c.save_theta_every << ")";
    std::cout << "\n  analyses    spectrum: " << (i.has_spectrum ? "yes" : "no") << ", lyapunov: " << (i.has_lyapunov ? "yes" : "no")
              << "\n";
    if (an.spectrum_rows)
        std::cout << "  stability   at step " << an.spectrum_step << " (last of " << an.spectrum_rows << " analyses): lambda_max(H) "
                  << an.lambda_max << " vs 2/alpha " << an.two_over_alpha << "; " << an.unstable
                  << " eigenvalue(s) of J found outside the unit circle, max |mu| " << an.max_abs_mu
                  << (an.converged ? "" : " (NOT converged)")
                  << (an.top_only ? " among those of the top of H only (bottom not computed: negative eigenvalues of H "
                                    "also give |mu| > 1; tdyn spectrum --which both)"
                                  : "")
                  << "\n";
    if (an.lyapunov_rows) {
        std::cout << "  lyapunov    exponents per step over steps " << an.lyapunov_from << ".." << an.lyapunov_step + 1 << " ("
                  << an.counted << " counted" << (an.lyapunov_complete ? "" : ", incomplete") << "):";
        for (Index k = 0; k < an.exponents.size(); ++k) std::cout << " " << an.exponents[k];
        if (!std::isnan(an.perturbation_exponent)) std::cout << "; two-trajectory " << an.perturbation_exponent;
        std::cout << "\n";
    }
    return 0;
}

}  // namespace

void setup_info(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<InfoOptions>();
    CLI::App* cmd = app.add_subcommand("info", "what a run file is: configuration, progress, analyses, status");
    cmd->add_option("RUN", o->file, "run file")->required()->check(CLI::ExistingFile);
    cmd->add_flag("--json", o->json, "print one JSON object");
    cmd->callback([o, &exit_code] { exit_code = run_info(*o); });
}

}  // namespace tdyn::cli
