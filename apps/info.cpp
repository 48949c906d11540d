// tdyn info: what a run file is and holds.
#include "commands.hpp"
#include "common.hpp"

#include "tdyn/lyapunov.hpp"
#include "tdyn/run.hpp"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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
    Index start_vectors = 0;  ///< tdyn lyapunov --start-vectors: v_1 .. v_k started along start_file's vectors
    std::string start_file;
    double perturbation_exponent = NAN;
    bool lyapunov_complete = false;
    MissedInstability missed;  ///< unstable spectrum steps the in-line v_1 does not show
};

/// One spectrum group (docs/FORMAT.md): /spectrum, or /spectrum_k{K}_{which} for a further (K, which).
struct SpectrumGroup {
    std::string name;   ///< "/spectrum", "/spectrum_k3_top", ...
    Index eigs = 0;     ///< attribute eigs (else the width of hessian_top)
    std::string which;  ///< attribute which, else inferred from the data (which_inferred)
    bool which_inferred = false;
    double alpha = NAN;
    Index rows = 0, steps = 0;                 ///< rows in the file; distinct steps analysed
    double first_step = NAN, last_step = NAN;  ///< smallest and largest step analysed
    double lambda_max = NAN;                   ///< at last_step (its newest row), as tdyn_runs.py shows it
    bool converged = true;                     ///< every row converged
    Index trace_rows = 0, density_rows = 0;
};

/// Rows of a group that are complete: `step` is written last, so its length counts them.
Index complete_rows(const h5::File& f, const std::string& group) {
    return f.exists(group + "/step") ? Index(f.rows(group + "/step")) : 0;
}

/// "top" when the bottom end is all NaN (and the top is not), "bottom" likewise, else "both": for files
/// written before spectrum groups had a `which` attribute.
std::string infer_which(const h5::File& f, const std::string& g, Index n) {
    auto any_finite = [&](const std::string& name) {
        return f.exists(name) && n > 0 && f.read_rows(name, 0, hsize_t(n)).array().isFinite().any();
    };
    const bool top = any_finite(g + "/hessian_top"), bottom = any_finite(g + "/hessian_bottom");
    return top && !bottom ? "top" : bottom && !top ? "bottom" : "both";
}

/// The spectrum groups of a run file: /spectrum first, then /spectrum_k{K}_{which} by K and which.
std::vector<SpectrumGroup> read_spectrum_groups(const h5::File& f) {
    static const std::regex sibling("spectrum_k([0-9]+)_(top|bottom|both)");
    std::vector<std::pair<std::pair<Index, std::string>, std::string>> names;
    for (const std::string& child : f.children("/")) {
        std::smatch m;
        if (child == "spectrum") names.push_back({{-1, ""}, "/" + child});
        else if (std::regex_match(child, m, sibling))
            names.push_back({{std::stoll(m[1].str()), m[2].str()}, "/" + child});
    }
    std::sort(names.begin(), names.end());
    std::vector<SpectrumGroup> out;
    for (const auto& [key, g] : names) {
        const Index n = complete_rows(f, g);
        if (n == 0) continue;
        SpectrumGroup s;
        s.name = g;
        s.rows = n;
        s.eigs = f.has_attr(g, "eigs") ? Index(f.attr_int(g, "eigs"))
                 : f.exists(g + "/hessian_top") && f.shape(g + "/hessian_top").size() == 2
                     ? Index(f.shape(g + "/hessian_top")[1])
                     : 0;
        if (f.has_attr(g, "which")) s.which = f.attr_string(g, "which");
        else {
            s.which = infer_which(f, g, n);
            s.which_inferred = true;
        }
        if (f.has_attr(g, "alpha")) s.alpha = f.attr_double(g, "alpha");
        const Vector step = f.read_vector(g + "/step").head(n);
        const Vector lmax = f.exists(g + "/lambda_max") ? f.read_vector(g + "/lambda_max") : Vector();
        const Vector conv = f.exists(g + "/converged") ? f.read_vector(g + "/converged") : Vector();
        std::set<double> distinct;
        for (Index j = 0; j < n; ++j) {
            distinct.insert(step[j]);
            // the newest row of the largest step (rows are in the order the analyses were made)
            if (std::isnan(s.last_step) || step[j] >= s.last_step) {
                s.last_step = step[j];
                s.lambda_max = j < lmax.size() ? lmax[j] : NAN;
            }
            if (j < conv.size() && conv[j] == 0) s.converged = false;
        }
        s.steps = Index(distinct.size());
        s.first_step = *distinct.begin();
        s.trace_rows = complete_rows(f, g + "/trace");
        s.density_rows = complete_rows(f, g + "/density");
        out.push_back(s);
    }
    return out;
}

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
        if (f.has_attr("/lyapunov", "start_vectors")) {
            a.start_vectors = f.attr_int("/lyapunov", "start_vectors");
            a.start_file = f.attr_string("/lyapunov", "start_file");
        }
        if (f.exists("/lyapunov/perturbation/step") && f.rows("/lyapunov/perturbation/step") > 0)
            a.perturbation_exponent =
                f.read_row("/lyapunov/perturbation/exponent", f.rows("/lyapunov/perturbation/step") - 1)[0];
    }
    // The check is about a randomly started v_1; one started along given vectors (tdyn lyapunov
    // --start-vectors or --start-along) follows what it was pointed at, so it is not checked.
    if (a.spectrum_rows && a.lyapunov_rows && a.start_vectors == 0 && f.exists("/spectrum/lambda_max") &&
        f.exists("/lyapunov/log_growth")) {
        // complete rows only (`step` is written last), and no more than a damaged file holds
        auto first_column = [&](const std::string& name, Index n) {
            n = f.exists(name) ? std::min(n, Index(f.rows(name))) : 0;
            const RowMatrix m = n ? f.read_rows(name, 0, hsize_t(n)) : RowMatrix();
            return m.cols() ? Vector(m.col(0)) : Vector();
        };
        auto series = [&](const std::string& name, Index n) {
            const Vector v = f.exists(name) ? f.read_vector(name) : Vector();
            return Vector(v.head(std::min(n, Index(v.size()))));
        };
        const Index ns = a.spectrum_rows, nl = a.lyapunov_rows;
        const Index no = f.exists("/lyapunov/overlap_step") ? Index(f.rows("/lyapunov/overlap_step")) : 0;
        const double alpha =
            f.has_attr("/spectrum", "alpha") ? f.attr_double("/spectrum", "alpha") : 2 / a.two_over_alpha;
        a.missed = find_missed_instability(
            series("/spectrum/step", ns), series("/spectrum/lambda_max", ns), alpha, series("/lyapunov/step", nl),
            first_column("/lyapunov/log_growth", nl),
            f.has_attr("/lyapunov", "qr_every") ? Index(f.attr_int("/lyapunov", "qr_every")) : 1,
            series("/lyapunov/overlap_step", no), first_column("/lyapunov/overlap", no),
            series("/spectrum/cos_g_u1", ns));  // absent in files written before it: empty, read as NaN
    }
    return a;
}

/// "450, 460, 470, ..., 660, 670": the flagged steps, the middle elided when there are many.
std::string list_steps(const std::vector<Index>& steps) {
    std::string out;
    for (std::size_t k = 0; k < steps.size(); ++k) {
        if (steps.size() > 6 && k == 3) {
            out += ", ...";
            k = steps.size() - 3;
            continue;
        }
        out += (k ? ", " : "") + std::to_string(steps[k]);
    }
    return out;
}

/// The one-line warning of `tdyn info` when the in-line tangent vector may miss an instability.
std::string missed_instability_line(const MissedInstability& m, Index last_step) {
    std::ostringstream o;
    // over the whole flagged stretch: a fresh vector needs ~ln(sqrt(P)) / ln|mu| steps to turn to u_1
    const Index from = m.steps.front(), to = std::min(last_step, m.until);
    o << "  warning     the in-line tangent vector may miss an unstable direction: |1 - alpha lambda_max| > 1 at "
      << m.steps.size() << " of the " << m.unstable
      << " spectrum step(s) with |mu| > 1 that it covers (t = " << list_steps(m.steps) << "; ln|mu| " << m.mean_log_mu
      << " per step on average there), but v_1 grows at " << m.mean_exponent << " per step over them";
    if (!std::isnan(m.max_overlap)) o << " and its |cos| with the top eigenvector of H is at most " << m.max_overlap;
    // the gradient's share along u_1 (/spectrum/cos_g_u1) tells the first overshoot from the hovering phase
    if (!m.not_oscillating.empty())
        o << "; at " << m.not_oscillating.size() << " of them (t = " << list_steps(m.not_oscillating)
          << ") GD does not oscillate along u_1 (|g.u_1|/|g| < " << MissedInstability::kOscillationShare
          << "): a clean unstable mode, where a restarted vector should grow at ~ln|mu|";
    if (!m.oscillating.empty())
        o << "; at " << m.oscillating.size() << " (t = " << list_steps(m.oscillating)
          << ") GD oscillates along u_1: hovering, where a restarted vector grows slowly or not at all (or the last"
             " steps of an overshoot, where the oscillation has grown)";
    o << "; check with a restarted tangent vector, on a copy: tdyn lyapunov COPY.h5 --vectors 1 --from "
      << (m.not_oscillating.empty() ? from : m.not_oscillating.front()) << " --to " << to
      << " --force (docs/FINDINGS.md section 2), or, surer after stable stretches that emptied v_1's share along"
         " u_1, with v_1 started along u_1: the same with --start-along top (docs/FINDINGS.md 1.1.2)";
    return o.str();
}

int run_info(const InfoOptions& o) {
    RunReader r(o.file);
    const Analyses an = read_analyses(r.file());
    const std::vector<SpectrumGroup> spectra = read_spectrum_groups(r.file());
    const RunInfo& i = r.info();
    const TrainConfig& c = i.config;
    const Architecture arch = c.architecture();
    const Index first_theta = i.theta_steps.empty() ? -1 : i.theta_steps.front();
    const Index last_theta = i.theta_steps.empty() ? -1 : i.theta_steps.back();
    if (o.json) {
        Json j = {{"file", o.file},
                  {"format_version", i.format_version},
                  {"tool_version", i.tool_version},
                  {"command_line", i.command_line},
                  {"status", to_string(i.status)},
                  {"diverged_at", i.diverged_at},
                  {"config",
                   {{"data", c.data},
                    {"samples", c.samples},
                    {"arch", c.arch},
                    {"parameters", arch.num_params()},
                    {"activation", to_string(c.activation)},
                    {"output", to_string(c.output)},
                    {"alpha", c.lr},
                    {"steps", c.steps},
                    {"batch", c.batch},
                    {"seed", c.seed},
                    {"init", c.init},
                    {"save_theta_every", c.save_theta_every},
                    {"precision", c.precision == Precision::F32 ? "f32" : "f64"}}},
                  {"rows", i.rows},
                  {"last_step", i.last_step},
                  {"last_loss", i.last_loss},
                  {"last_accuracy", i.last_accuracy},
                  {"theta_stored", i.theta_steps.size()},
                  {"theta_first_step", first_theta},
                  {"theta_last_step", last_theta},
                  {"has_spectrum", i.has_spectrum},
                  {"has_lyapunov", i.has_lyapunov}};
        if (an.spectrum_rows)
            j["spectrum"] = {{"rows", an.spectrum_rows},    {"step", an.spectrum_step},
                             {"lambda_max", an.lambda_max}, {"two_over_alpha", an.two_over_alpha},
                             {"unstable", an.unstable},     {"max_abs_mu", an.max_abs_mu},
                             {"converged", an.converged},   {"bottom_computed", !an.top_only}};
        Json list = Json::array();
        for (const SpectrumGroup& s : spectra)
            list.push_back({{"name", s.name},
                            {"eigs", s.eigs},
                            {"which", s.which},
                            {"which_inferred", s.which_inferred},
                            {"alpha", s.alpha},
                            {"rows", s.rows},
                            {"steps", s.steps},
                            {"first_step", Index(s.first_step)},
                            {"last_step", Index(s.last_step)},
                            {"lambda_max", s.lambda_max},
                            {"converged", s.converged},
                            {"trace_rows", s.trace_rows},
                            {"density_rows", s.density_rows}});
        j["spectra"] = std::move(list);
        if (an.lyapunov_rows)
            j["lyapunov"] = {{"rows", an.lyapunov_rows},
                             {"step", an.lyapunov_step},
                             {"from", an.lyapunov_from},
                             {"counted_steps", an.counted},
                             {"exponents", std::vector<double>(an.exponents.begin(), an.exponents.end())},
                             {"perturbation_exponent", an.perturbation_exponent},
                             {"complete", an.lyapunov_complete},
                             {"start_vectors", an.start_vectors},
                             {"start_file", an.start_vectors ? Json(an.start_file) : Json()}};
        if (an.missed.unstable)
            j["tangent_check"] = {{"unstable_steps", an.missed.unstable},
                                  {"missed_steps", an.missed.steps},
                                  {"mean_log_mu", an.missed.mean_log_mu},
                                  {"mean_exponent", an.missed.mean_exponent},
                                  {"max_overlap", an.missed.max_overlap},
                                  {"warning", !an.missed.steps.empty()},
                                  {"not_oscillating_steps", an.missed.not_oscillating},
                                  {"oscillating_steps", an.missed.oscillating}};
        std::cout << json_line(j) << "\n";
        return 0;
    }
    std::cout << o.file << ": tdyn run (format " << i.format_version << ", written by tdyn " << i.tool_version << ")\n"
              << "  command     " << i.command_line << "\n"
              << "  status      " << to_string(i.status);
    if (i.status == RunStatus::Diverged) std::cout << " at step " << i.diverged_at;
    if (i.status == RunStatus::Running)
        std::cout << " (still being written, or killed: resume with tdyn train --out " << o.file << " --resume)";
    std::cout << "\n  network     " << c.arch << " (" << arch.num_params() << " parameters), "
              << to_string(c.activation) << " hidden, " << to_string(c.output) << "\n"
              << "  data        " << c.data << ", " << (c.samples ? std::to_string(c.samples) : std::string("all"))
              << " samples, " << (c.batch ? "mini-batch " + std::to_string(c.batch) : std::string("full batch")) << "\n"
              << "  training    alpha " << c.lr << " (2/alpha = " << 2 / c.lr << "), " << c.steps << " steps, seed "
              << c.seed << (c.init.empty() ? "" : ", init " + c.init) << ", "
              << (c.precision == Precision::F32 ? "f32" : "f64") << "\n"
              << "  trajectory  " << i.rows << " rows";
    if (i.rows)
        std::cout << " (steps 0.." << i.last_step << "), last loss " << i.last_loss << ", accuracy " << i.last_accuracy;
    std::cout << "\n  theta       " << i.theta_steps.size() << " stored";
    if (!i.theta_steps.empty())
        std::cout << " (steps " << first_theta << ".." << last_theta << ", every " << c.save_theta_every << ")";
    std::cout << "\n  analyses    spectrum: " << (i.has_spectrum ? "yes" : "no")
              << ", lyapunov: " << (i.has_lyapunov ? "yes" : "no") << "\n";
    for (const SpectrumGroup& s : spectra) {
        std::cout << "  spectrum    " << s.name << ": K = " << s.eigs << ", which " << s.which
                  << (s.which_inferred ? " (no attribute; from the data)" : "") << ", " << s.steps
                  << " step(s) (t = " << s.first_step << ".." << s.last_step << ", " << s.rows
                  << " rows), lambda_max(H) " << s.lambda_max << " at t = " << s.last_step
                  << (s.converged ? "" : ", NOT all converged");
        if (s.trace_rows) std::cout << "; trace " << s.trace_rows << " rows";
        if (s.density_rows) std::cout << "; density " << s.density_rows << " rows";
        std::cout << "\n";
    }
    // the bottom end of H, when /spectrum lacks it, may be in another group
    std::string bottom_in;
    for (const SpectrumGroup& s : spectra)
        if (s.name != "/spectrum" && s.which != "top" && bottom_in.empty()) bottom_in = s.name;
    if (an.spectrum_rows)
        std::cout << "  stability   at step " << an.spectrum_step << " (last of " << an.spectrum_rows
                  << " analyses in /spectrum): lambda_max(H) " << an.lambda_max << " vs 2/alpha " << an.two_over_alpha
                  << "; " << an.unstable << " eigenvalue(s) of J found outside the unit circle, max |mu| "
                  << an.max_abs_mu << (an.converged ? "" : " (NOT converged)")
                  << (!an.top_only ? ""
                      : bottom_in.empty()
                          ? " among those of the top of H only (bottom not computed: negative eigenvalues of H "
                            "also give |mu| > 1; tdyn spectrum --which both)"
                          : " among those of the top of H only (negative eigenvalues of H also give |mu| > 1: "
                            "see " +
                                bottom_in + " for the bottom end)")
                  << "\n";
    if (an.lyapunov_rows) {
        std::cout << "  lyapunov    exponents per step over steps " << an.lyapunov_from << ".." << an.lyapunov_step + 1
                  << " (" << an.counted << " counted" << (an.lyapunov_complete ? "" : ", incomplete") << "):";
        for (Index k = 0; k < an.exponents.size(); ++k) std::cout << " " << an.exponents[k];
        if (!std::isnan(an.perturbation_exponent)) std::cout << "; two-trajectory " << an.perturbation_exponent;
        if (an.start_vectors)
            std::cout << "; " << (an.start_vectors == 1 ? "v_1" : "v_1..v_" + std::to_string(an.start_vectors)) << " "
                      << start_phrase(an.start_file)
                      << " (not a random start: the exponents include those directions' transient)";
        std::cout << "\n";
    }
    if (!an.missed.steps.empty()) std::cout << missed_instability_line(an.missed, i.last_step) << "\n";
    return 0;
}

}  // namespace

void setup_info(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<InfoOptions>();
    CLI::App* cmd = app.add_subcommand(
        "info",
        "what a run file is: configuration, progress, analyses, status; warns where the in-line tangent vector may miss an instability");
    cmd->add_option("RUN", o->file, "run file")->required()->check(CLI::ExistingFile);
    cmd->add_flag("--json", o->json, "print one JSON object");
    cmd->callback([o, &exit_code] { exit_code = run_info(*o); });
}

}  // namespace tdyn::cli
