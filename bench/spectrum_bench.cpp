// Eigenvalues of H for the 784-50-10 sigmoid / softmax-ce network on the first k MNIST images
// (float64, full batch), at theta_20: 20 gradient-descent steps with alpha = 0.1 from
// init_params(arch, 1), done once at program start. The yardstick is the dense float64
// X-product of the same k (bench_support.hpp); one HVP (M = 1) and one block of 5 (per vector)
// are measured at theta_20 at start as a second yardstick.
//
// References, Lanczos at tol 1e-9, are computed once at start: the top 5 at theta_20 and the top
// eigenvalue at theta_30 (the end of the warm runs); results are compared with them
// (rel_err = max_i |lambda_i - ref_i| / |ref_i|).
//
//   BM_TopCold                         top eigenvalue, tol 1e-6, random start
//   BM_TopWarm/E:e/ncv:n               10 more GD steps from theta_20, a solve every E steps
//                                      warm-started from the previous eigenvector (Krylov size n;
//                                      n = 8 is hessian_eigs' warm default)
//   BM_Top5/lanczos/ncv:n              top 5, tol 1e-6, cold
//   BM_Top5/davidson/diag:m            top 5 by block Davidson, D from m Hutchinson probes (0: D = 0),
//                                      the diagonal's HVPs counted
//
// Counters (one iteration each: HVP counts do not depend on load, times do):
//   hvps           HVPs used (EigenResult::matvecs: the residual check and any diagonal included)
//   hvps_per_solve warm runs: mean over the solves; hvps_max the largest
//   ms, x_units    wall time of the solve, and in X-product units
//   hvp_units      ms / (hvps x one-HVP ms measured at start): < 1 when block products help
//   rel_res        max_i ||H u_i - lambda_i u_i|| / |lambda_i|  (an eigenvalue error bound)
//   rel_err        max_i |lambda_i - ref_i| / |ref_i|  (ref: tol 1e-9 at the same theta)
//   lambda1        top eigenvalue
//
//   build/spectrum_bench [--k=60000] [--theta-out=FILE.h5] [benchmark flags]
//
// --theta-out writes theta_20 as a tdyn params file (/params/theta) plus /bench/reference_top5,
// the tol-1e-9 eigenvalues, for bench/peer_torch.py --eigsh.
#include "bench_support.hpp"

#include "tdyn/evaluation.hpp"
#include "tdyn/h5.hpp"
#include "tdyn/hvp.hpp"
#include "tdyn/run.hpp"
#include "tdyn/spectrum.hpp"

#include <filesystem>

namespace {

using namespace tdyn;
using namespace tdyn::bench;

constexpr double kAlpha = 0.1;
constexpr Index kTrainSteps = 20, kTrackSteps = 10;

/// The problem at theta_20, built once.
struct Setup {
    Index k = 0;
    Architecture arch = Architecture::parse("784-50-10");
    std::unique_ptr<InputMatrix> X;
    std::unique_ptr<Evaluation> eval;
    Vector theta;              // theta_20
    Vector reference;          // top 5 at theta_20, tol 1e-9
    Vector reference_tracked;  // top 1 at theta_30, tol 1e-9
    EigenResult cold_top1;     // the default cold top-1 solve at theta_20: warm runs start from it
    double hvp_s = 0, hvp_block5_s = 0;
};

Setup& setup() {
    static Setup s;
    return s;
}

/// theta <- theta - alpha grad L(theta), `steps` times; leaves the Evaluation at the new theta
/// with its gradient computed (as a training step would).
void descend(Evaluation& e, Vector& theta, Index steps) {
    for (Index t = 0; t < steps; ++t) {
        theta -= kAlpha * e.gradient();
        e.reset(theta);
    }
    e.gradient();
}

Vector reference_top(Evaluation& e, Index K) {
    EigenOptions o;
    o.eigs = K;
    o.tol = 1e-9;
    const EigenResult r = hessian_eigs(e, Which::Top, o);
    if (!r.converged) std::fprintf(stderr, "reference: %s\n", to_string(r.status).c_str());
    return r.values;
}

void prepare(Index k, const std::string& theta_out) {
    Setup& s = setup();
    s.k = k;
    const Dataset& ds = mnist(k);
    s.X = std::make_unique<InputMatrix>(ds.X);
    s.theta = init_params(s.arch, 1);
    s.eval = std::make_unique<Evaluation>(s.arch, *s.X, ds.T, s.theta);
    auto t0 = Clock::now();
    const double loss0 = s.eval->loss();
    descend(*s.eval, s.theta, kTrainSteps);
    std::fprintf(stderr, "theta_20: %ld GD steps, alpha %.2f, loss %.6f -> %.6f (%.1f s)\n", long(kTrainSteps), kAlpha,
                 loss0, s.eval->loss(), seconds_since(t0));
    // One HVP and one block of 5 at theta_20 (median of 3 after one warm-up).
    const Index P = s.eval->num_params();
    const Matrix V = rademacher(P, 5, 3);
    Matrix HV(P, 5);
    s.eval->hessian_times(V, HV);
    std::vector<double> t1, t5;
    for (int i = 0; i < 3; ++i) {
        t0 = Clock::now();
        s.eval->hessian_times(V.col(0), HV.col(0));
        t1.push_back(seconds_since(t0));
        t0 = Clock::now();
        s.eval->hessian_times(V, HV);
        t5.push_back(seconds_since(t0) / 5);
    }
    s.hvp_s = median(t1);
    s.hvp_block5_s = median(t5);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f", s.hvp_s * 1e3);
    benchmark::AddCustomContext("hvp_ms", buf);
    std::snprintf(buf, sizeof buf, "%.2f", s.hvp_block5_s * 1e3);
    benchmark::AddCustomContext("hvp_block5_ms_per_vec", buf);
    std::fprintf(stderr, "HVP at theta_20: M = 1 %.1f ms (%.2f X-units), block of 5 %.1f ms per vector\n",
                 s.hvp_s * 1e3, s.hvp_s / x_unit(k), s.hvp_block5_s * 1e3);
    t0 = Clock::now();
    s.reference = reference_top(*s.eval, 5);
    std::fprintf(stderr, "reference top 5 at theta_20 (tol 1e-9, %.1f s):", seconds_since(t0));
    for (Index i = 0; i < s.reference.size(); ++i) std::fprintf(stderr, " %.12g", s.reference[i]);
    std::fprintf(stderr, "\n");
    s.eval->reset(s.theta);
    if (!theta_out.empty()) {
        std::filesystem::remove(theta_out);
        write_params(theta_out, s.theta, s.arch);
        h5::File f = h5::File::open_write(theta_out);
        f.write_vector("/bench/reference_top5", s.reference);
        f.write_scalar("/bench/alpha", kAlpha);
        f.write_scalar("/bench/train_steps", double(kTrainSteps));
        f.write_scalar("/bench/samples", double(k));
        std::fprintf(stderr, "wrote %s\n", theta_out.c_str());
    }
}

double rel_err(const Vector& values, const Vector& ref) {
    double m = 0;
    for (Index i = 0; i < std::min(values.size(), ref.size()); ++i)
        m = std::max(m, std::abs(values[i] - ref[i]) / std::abs(ref[i]));
    return values.size() && ref.size() ? m : std::nan("");  // NaN: no reference (bottom end)
}

double rel_res(const EigenResult& r) {
    double m = 0;
    for (Index i = 0; i < r.values.size(); ++i) m = std::max(m, r.residuals[i] / std::abs(r.values[i]));
    return m;
}

void report(benchmark::State& state, const EigenResult& r, double seconds, const Vector& ref) {
    const Setup& s = setup();
    state.counters["hvps"] = double(r.matvecs);
    state.counters["ms"] = seconds * 1e3;
    state.counters["x_units"] = seconds / x_unit(s.k);
    state.counters["hvp_units"] = seconds / (double(r.matvecs) * s.hvp_s);
    state.counters["rel_res"] = rel_res(r);
    state.counters["rel_err"] = rel_err(r.values, ref);
    state.counters["converged"] = r.converged ? 1 : 0;
    for (Index i = 0; i < r.values.size(); ++i) state.counters["lambda" + std::to_string(i + 1)] = r.values[i];
}

/// A cold solve at theta_20.
void cold(benchmark::State& state, EigenOptions o, Which which) {
    Setup& s = setup();
    for (auto _ : state) {
        s.eval->reset(s.theta);
        s.eval->gradient();  // a training step has it; the curvature terms are inside the timing
        const auto t0 = Clock::now();
        const EigenResult r = hessian_eigs(*s.eval, which, o);
        report(state, r, seconds_since(t0), which == Which::Top ? s.reference : Vector());
        if (o.eigs == 1 && o.krylov == 0 && o.solver == EigenSolver::Lanczos) s.cold_top1 = r;
    }
}
void BM_Cold(benchmark::State& state, EigenOptions o) { cold(state, o, Which::Top); }
void BM_ColdBottom(benchmark::State& state, EigenOptions o) { cold(state, o, Which::Bottom); }

/// Tracking during training: BM_TopCold's solve at theta_20 (not counted), then kTrackSteps GD steps
/// with a warm-started solve every E steps.
void BM_Warm(benchmark::State& state, EigenOptions o, Index E) {
    Setup& s = setup();
    for (auto _ : state) {
        s.eval->reset(s.theta);
        s.eval->gradient();
        if (s.reference_tracked.size() == 0) {  // computed on first use: top 1 at theta_30, tol 1e-9
            Vector theta = s.theta;
            descend(*s.eval, theta, kTrackSteps);
            s.reference_tracked = reference_top(*s.eval, 1);
            std::fprintf(stderr, "reference top 1 at theta_30 (tol 1e-9): %.12g\n", s.reference_tracked[0]);
            s.eval->reset(s.theta);
            s.eval->gradient();
        }
        if (s.cold_top1.vectors.cols() == 0) s.cold_top1 = hessian_eigs(*s.eval, Which::Top, EigenOptions{});
        EigenResult prev = s.cold_top1;
        Vector theta = s.theta;
        std::vector<double> hvps;
        double seconds = 0, worst_res = 0;
        bool converged = true;
        for (Index t = 1; t <= kTrackSteps; ++t) {
            descend(*s.eval, theta, 1);
            if (t % E) continue;
            const auto t0 = Clock::now();
            EigenResult r = hessian_eigs(*s.eval, Which::Top, o, &prev.vectors);
            seconds += seconds_since(t0);
            hvps.push_back(double(r.matvecs));
            worst_res = std::max(worst_res, rel_res(r));
            converged = converged && r.converged;
            prev = std::move(r);
        }
        double sum = 0, mx = 0;
        for (double h : hvps) sum += h, mx = std::max(mx, h);
        state.counters["solves"] = double(hvps.size());
        state.counters["hvps_per_solve"] = sum / double(hvps.size());
        state.counters["hvps_max"] = mx;
        state.counters["ms_per_solve"] = seconds * 1e3 / double(hvps.size());
        state.counters["rel_res"] = worst_res;
        state.counters["rel_err"] = rel_err(prev.values, s.reference_tracked);  // the last solve, at theta_30
        state.counters["converged"] = converged ? 1 : 0;
        state.counters["lambda1"] = prev.values.size() ? prev.values[0] : std::nan("");
    }
}

void add(const std::string& name, void (*fn)(benchmark::State&, EigenOptions), EigenOptions o) {
    benchmark::RegisterBenchmark(name.c_str(), fn, o)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
    std::string theta_out;
    for (int r = 1; r < argc; ++r)
        if (std::string(argv[r]).rfind("--theta-out=", 0) == 0) {
            theta_out = std::string(argv[r]).substr(12);
            for (int j = r; j < argc; ++j) argv[j] = argv[j + 1];
            --argc;
            --r;
        }
    Options opt = parse_options(argc, argv);
    if (opt.ks.size() == 3) opt.ks = {60000};  // the default list of bench_support: this program wants one k
    opt.ks.resize(1);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    measure_x_units(opt);
    prepare(opt.ks.front(), theta_out);

    EigenOptions top1;
    add("BM_TopCold", BM_Cold, top1);
    for (Index ncv : {8, 4})
        for (Index E : {1, 5, 10}) {
            EigenOptions o = top1;
            o.krylov = ncv;
            const std::string name = "BM_TopWarm/E:" + std::to_string(E) + "/ncv:" + std::to_string(ncv);
            benchmark::RegisterBenchmark(name.c_str(), BM_Warm, o, E)
                ->Iterations(1)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
        }
    EigenOptions top5;
    top5.eigs = 5;
    for (Index ncv : {20, 30, 40}) {
        EigenOptions o = top5;
        o.krylov = ncv;
        add("BM_Top5/lanczos/ncv:" + std::to_string(ncv), BM_Cold, o);
    }
    for (Index m : {0, 8}) {
        EigenOptions o = top5;
        o.solver = EigenSolver::Davidson;
        o.diagonal_probes = m;
        add("BM_Top5/davidson/diag:" + std::to_string(m), BM_Cold, o);
    }
    for (Index nmax : {20, 30, 80}) {  // the largest search space (default 10 K = 50)
        EigenOptions o = top5;
        o.solver = EigenSolver::Davidson;
        o.krylov = nmax;
        add("BM_Top5/davidson/diag:0/max:" + std::to_string(nmax), BM_Cold, o);
    }
    // The bottom end (smallest algebraic; rel_err is NaN: no reference there).
    for (const EigenSolver solver : {EigenSolver::Lanczos, EigenSolver::Davidson}) {
        EigenOptions o = top5;
        o.solver = solver;
        add(solver == EigenSolver::Lanczos ? "BM_Bottom5/lanczos/ncv:20" : "BM_Bottom5/davidson/diag:0", BM_ColdBottom,
            o);
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
