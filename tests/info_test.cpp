// tdyn info on run files with several spectrum groups (/spectrum and /spectrum_k{K}_{which},
// docs/FORMAT.md): one text line and one "spectra" entry per group, the older keys kept.
#include "test_support.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace tdyn {
namespace {

/// One row of a hand-written spectrum group.
struct Row {
    double step;
    Vector top, bottom;
    double converged = 1;
};

/// Appends a spectrum group `g` with the layout of docs/FORMAT.md (which = "" writes no `which` attribute,
/// as files older than it have). Stands in for `tdyn spectrum --eigs K --which W` until that writes siblings.
void write_spectrum_group(const std::string& run, const std::string& g, Index K, double alpha, const std::string& which,
                          const std::vector<Row>& rows) {
    h5::File f = h5::File::open_write(run);
    for (const char* s : {"hessian_top", "hessian_bottom", "residual_top", "residual_bottom", "jacobian"})
        f.create_series(g + "/" + s, hsize_t(K));
    for (const char* s : {"matvecs", "converged", "lambda_max", "two_over_alpha", "unstable", "max_abs_mu", "step"})
        f.create_series(g + "/" + s, 0);
    f.set_attr(g, "eigs", std::int64_t(K));
    f.set_attr(g, "alpha", alpha);
    if (!which.empty()) f.set_attr(g, "which", which);
    for (const Row& r : rows) {
        const Vector nan = Vector::Constant(K, std::nan(""));
        const Vector top = r.top.size() ? r.top : nan, bottom = r.bottom.size() ? r.bottom : nan;
        f.append(g + "/hessian_top", top);
        f.append(g + "/hessian_bottom", bottom);
        f.append(g + "/residual_top", Vector::Constant(K, 1e-9));
        f.append(g + "/residual_bottom", Vector::Constant(K, 1e-9));
        f.append(g + "/jacobian", (1.0 - alpha * top.array()).matrix());
        f.append_scalar(g + "/matvecs", 10);
        f.append_scalar(g + "/converged", r.converged);
        f.append_scalar(g + "/lambda_max", r.top.size() ? r.top.maxCoeff() : std::nan(""));
        f.append_scalar(g + "/two_over_alpha", 2 / alpha);
        f.append_scalar(g + "/unstable", 0);
        f.append_scalar(g + "/max_abs_mu", 0.5);
        f.append_scalar(g + "/step", r.step);  // last, as the writer does
    }
}

/// The JSON object of the "spectra" entry named `name` (text from its '{' to its '}'), or "" if absent.
std::string spectra_entry(const std::string& json, const std::string& name) {
    const std::size_t list = json.find("\"spectra\": [");
    if (list == std::string::npos) return "";
    const std::size_t at = json.find("{\"name\": \"" + name + "\"", list);
    if (at == std::string::npos) return "";
    return json.substr(at, json.find('}', at) - at + 1);
}

/// The names of the "spectra" entries, in order.
std::vector<std::string> spectra_names(const std::string& json) {
    std::vector<std::string> names;
    const std::size_t list = json.find("\"spectra\": [");
    if (list == std::string::npos) return names;
    const std::size_t end = json.find(']', list);
    for (std::size_t at = json.find("{\"name\": \"", list); at < end; at = json.find("{\"name\": \"", at + 1)) {
        const std::size_t b = at + 10;
        names.push_back(json.substr(b, json.find('"', b) - b));
    }
    return names;
}

double number_after(const std::string& text, const std::string& key) {
    const std::size_t at = text.find("\"" + key + "\": ");
    return at == std::string::npos ? std::nan("") : std::stod(text.substr(at + key.size() + 4));
}

TEST(Info, ListsEverySpectrumGroup) {
    const std::string data = test::temp_path("groups-data.h5");
    test::write_data_file(data, 80, 6, 3, 4);
    const std::string run = test::temp_path("groups-run.h5");
    const auto tr = test::run_tdyn("train --data " + data +
                                   " --arch 6-4-3 --steps 8 --lr 0.5 --save-theta-every 4 "
                                   "--spectrum-every 4 --eigs 2 --which top --quiet --out " +
                                   run);
    ASSERT_EQ(tr.exit_code, 0) << tr.err;
    Vector step, lmax;
    {
        const h5::File f = h5::File::open_read(run);
        step = f.read_vector("/spectrum/step");
        lmax = f.read_vector("/spectrum/lambda_max");
    }
    ASSERT_GE(step.size(), 2);
    // A second configuration (K, which) = (3, both): rows at steps 8, 4 and again 8 (the newest row of
    // step 8 is the one info reports), one of them not converged, and a trace subgroup.
    Vector a(3), b(3), c(3), bottom(3);
    a << 5, 4, 3;
    b << 6, 2, 1;
    c << 7.25, 2, 1;
    bottom << -1, -0.5, -0.25;
    write_spectrum_group(run, "/spectrum_k3_both", 3, 0.5, "both", {{8, a, bottom}, {4, b, bottom, 0}, {8, c, bottom}});
    {
        h5::File f = h5::File::open_write(run);
        f.create_series("/spectrum_k3_both/trace/step", 0);
        f.append_scalar("/spectrum_k3_both/trace/step", 8);
    }
    // Not spectrum groups of the naming rule, or without rows: not listed.
    write_spectrum_group(run, "/spectrum_k2_top", 2, 0.5, "top", {});
    write_spectrum_group(run, "/spectrum_extra", 1, 0.5, "top", {{0, Vector::Constant(1, 9.0), Vector()}});

    const auto js = test::run_tdyn("info " + run + " --json");
    ASSERT_EQ(js.exit_code, 0) << js.err;
    EXPECT_EQ(spectra_names(js.out), (std::vector<std::string>{"/spectrum", "/spectrum_k3_both"})) << js.out;
    // the keys the output always had
    for (const std::string& s :
         std::vector<std::string>{"\"has_spectrum\": true", "\"spectrum\": {\"rows\": " + std::to_string(step.size()),
                                  "\"bottom_computed\": false", "\"status\": \"completed\""})
        EXPECT_NE(js.out.find(s), std::string::npos) << s << "\n" << js.out;

    const std::string d = spectra_entry(js.out, "/spectrum");
    for (const std::string& s : std::vector<std::string>{
             "\"eigs\": 2", "\"which\": \"top\"", "\"alpha\": 0.5", "\"rows\": " + std::to_string(step.size()),
             "\"steps\": " + std::to_string(step.size()), "\"first_step\": " + std::to_string(Index(step.minCoeff())),
             "\"last_step\": " + std::to_string(Index(step.maxCoeff())), "\"converged\": true", "\"trace_rows\": 0",
             "\"density_rows\": 0"})
        EXPECT_NE(d.find(s), std::string::npos) << s << "\n" << d;
    EXPECT_EQ(number_after(d, "lambda_max"), lmax[lmax.size() - 1]) << d;

    const std::string o = spectra_entry(js.out, "/spectrum_k3_both");
    for (const char* s :
         {"\"eigs\": 3", "\"which\": \"both\"", "\"which_inferred\": false", "\"rows\": 3", "\"steps\": 2",
          "\"first_step\": 4", "\"last_step\": 8", "\"converged\": false", "\"trace_rows\": 1", "\"density_rows\": 0"})
        EXPECT_NE(o.find(s), std::string::npos) << s << "\n" << o;
    EXPECT_EQ(number_after(o, "lambda_max"), 7.25) << o;

    const auto text = test::run_tdyn("info " + run);
    ASSERT_EQ(text.exit_code, 0) << text.err;
    for (const std::string& s : std::vector<std::string>{
             "\n  spectrum    /spectrum: K = 2, which top",
             "\n  spectrum    /spectrum_k3_both: K = 3, which both, "
             "2 step(s) (t = 4..8, 3 rows), lambda_max(H) 7.25 at t = 8, NOT all converged; trace 1 rows\n",
             "\n  stability   at step ", "see /spectrum_k3_both for the bottom end"})
        EXPECT_NE(text.out.find(s), std::string::npos) << s << "\n" << text.out;
    EXPECT_EQ(text.out.find("spectrum_extra"), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find("spectrum_k2_top"), std::string::npos) << text.out;
}

TEST(Info, InfersWhichWhenTheAttributeIsMissing) {
    const std::string data = test::temp_path("which-data.h5");
    test::write_data_file(data, 60, 6, 3, 5);
    const std::string run = test::temp_path("which-run.h5");
    ASSERT_EQ(test::run_tdyn("train --data " + data + " --arch 6-4-3 --steps 3 --quiet --out " + run).exit_code, 0);
    const auto none = test::run_tdyn("info " + run + " --json");
    ASSERT_EQ(none.exit_code, 0) << none.err;
    EXPECT_NE(none.out.find("\"has_spectrum\": false, \"has_lyapunov\": false, \"spectra\": []"), std::string::npos)
        << none.out;

    // An old-style /spectrum (no `which`) holding only the bottom end.
    Vector bottom(2);
    bottom << -0.5, 0.25;
    write_spectrum_group(run, "/spectrum", 2, 0.1, "", {{0, Vector(), bottom}, {3, Vector(), bottom}});
    const auto js = test::run_tdyn("info " + run + " --json");
    ASSERT_EQ(js.exit_code, 0) << js.err;
    const std::string d = spectra_entry(js.out, "/spectrum");
    for (const char* s : {"\"which\": \"bottom\"", "\"which_inferred\": true", "\"steps\": 2", "\"last_step\": 3",
                          "\"lambda_max\": null"})
        EXPECT_NE(d.find(s), std::string::npos) << s << "\n" << js.out;
    const auto text = test::run_tdyn("info " + run);
    EXPECT_NE(text.out.find("  spectrum    /spectrum: K = 2, which bottom (no attribute; from the data)"),
              std::string::npos)
        << text.out;
}

}  // namespace
}  // namespace tdyn
