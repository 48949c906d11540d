// Hessian-vector products of the 784-50-10 sigmoid / softmax-ce network at a cached point
// (the Evaluation is reset once, the gradient and the curvature terms are computed before
// the timed loop), for blocks of M vectors, dense and sparse products with X, float64 and
// float32. The yardstick is the dense float64 X-product of the same k (bench_support.hpp).
//
//   BM_HVP/k/path/precision/M    one call hessian_times(V, HV) with V, HV P x M
//   BM_ThirdOrder/k/path/exact/M   grad(v_j^T H e_j) for M pairs: third_order_times (float64;
//                                one wide product with X and one with X^T for the M pairs)
//   BM_ThirdOrder/k/path/exact_hv/M   third_order_times with H v_j from the same pass (the
//                                call FAR's adjoint makes: omega and J^T eps together)
//   BM_ThirdOrder/k/path/differences/M   the same by central differences of H v along the unit
//                                e_j (two products-only Evaluations at theta +- h e^_j, an HVP
//                                each, per pair), as FAR's --second-derivative differences does
//   (counters x_units and x_units_adj of BM_ThirdOrder are per pair)
//
// Counters (median per call over the run's iterations):
//   ms              one call (M vectors)
//   ms_per_vec      ms / M
//   x_units_per_vec ms_per_vec / yardstick ms
//   hvps_per_s      M / seconds per call
//   first_call_ms   the untimed first call (f', f'' terms and buffers allocated)
//   x_units_adj_per_vec  median over iterations of (call time / yardstick timed right after it) / M:
//                   steadier than x_units_per_vec when the machine's load changes within a run
//
//   M = 1, 2, 4, 8, 32 for BM_HVP; 1, 2 for BM_ThirdOrder.
//
//   build-bench/hvp_bench [--k=1000,10000,60000] [--seconds=1.5] [benchmark flags]
#include "bench_support.hpp"

#include "tdyn/evaluation.hpp"
#include "tdyn/hvp.hpp"

#include <tuple>

namespace {

using namespace tdyn;
using namespace tdyn::bench;

/// The Evaluation at theta of one (k, path, precision), kept between the benchmarks that
/// share it (one slot: the next configuration frees the previous one).
struct Point {
    std::tuple<Index, XPath, Precision> key;
    std::unique_ptr<InputMatrix> X;
    std::unique_ptr<Evaluation> eval;
};
Point& the_point() {
    static Point p;
    return p;
}
/// The X of the current point (for a second Evaluation on the same data).
const InputMatrix* point_X() { return the_point().X.get(); }

Evaluation& point(Index k, XPath path, Precision prec) {
    Point& p = the_point();
    const auto key = std::make_tuple(k, path, prec);
    if (!p.eval || p.key != key) {
        p.eval.reset();
        p.X.reset();
        const Dataset& ds = mnist(k);
        p.X = std::make_unique<InputMatrix>(ds.X, path, prec);
        p.eval = std::make_unique<Evaluation>(arch(), *p.X, ds.T, init_params(arch(), 1));
        p.eval->gradient();
        p.key = key;
    }
    return *p.eval;
}

void BM_HVP(benchmark::State& state, Index k, XPath path, Precision prec, Index M) {
    Evaluation& e = point(k, path, prec);
    const Index P = e.num_params();
    std::srand(7);
    const Matrix V = Matrix::Random(P, M);
    Matrix HV(P, M);
    const auto t0 = Clock::now();
    e.hessian_times(V, HV);  // curvature terms and buffers, outside the timed loop
    const double first = seconds_since(t0);
    Timer tm;
    AdjacentYardstick adj(k);
    time_with_yardstick(state, tm, adj, [&] {
        e.hessian_times(V, HV);
        benchmark::DoNotOptimize(HV.data());
        benchmark::ClobberMemory();
    });
    const double s = tm.median();
    state.counters["ms"] = s * 1e3;
    state.counters["ms_per_vec"] = s * 1e3 / double(M);
    state.counters["x_units_per_vec"] = s / double(M) / x_unit(k);
    state.counters["hvps_per_s"] = double(M) / s;
    state.counters["first_call_ms"] = first * 1e3;
    state.counters["x_units_adj_per_vec"] = adj.median_ratio() / double(M);
}

enum class Third { Exact, ExactWithHV, Differences };

void BM_ThirdOrder(benchmark::State& state, Index k, XPath path, Third how, Index M) {
    Evaluation& e = point(k, path, Precision::F64);
    const Index P = e.num_params();
    std::srand(11);
    const Matrix E = Matrix::Random(P, M), V = Matrix::Random(P, M);
    Matrix T(P, M), HV(P, M), Hp(P, 1), Hm(P, 1);
    const Dataset& ds = mnist(k);
    Evaluation shifted(arch(), *point_X(), ds.T);
    shifted.set_products_only(true);
    const double h = 1e-5;
    auto once = [&] {
        if (how == Third::Exact) return e.third_order_times(E, V, T);
        if (how == Third::ExactWithHV) return e.third_order_times(E, V, T, HV);
        for (Index j = 0; j < M; ++j) {
            const double norm = E.col(j).norm();
            const Vector d = E.col(j) / norm;
            shifted.reset(e.theta() + h * d);
            shifted.hessian_times(V.col(j), Hp);
            shifted.reset(e.theta() - h * d);
            shifted.hessian_times(V.col(j), Hm);
            T.col(j) = (norm / (2 * h)) * (Hp - Hm);
        }
    };
    once();  // buffers, outside the timed loop
    Timer tm;
    AdjacentYardstick adj(k);
    time_with_yardstick(state, tm, adj, [&] {
        once();
        benchmark::DoNotOptimize(T.data());
        benchmark::ClobberMemory();
    });
    const double s = tm.median();
    state.counters["ms"] = s * 1e3;
    state.counters["x_units"] = s / x_unit(k) / double(M);
    state.counters["x_units_adj"] = adj.median_ratio() / double(M);
}

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse_options(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    measure_x_units(opt);

    const std::pair<XPath, const char*> paths[] = {{XPath::Dense, "dense"}, {XPath::Sparse, "sparse"}};
    const std::pair<Precision, const char*> precs[] = {{Precision::F64, "f64"}, {Precision::F32, "f32"}};
    const Index blocks[] = {1, 2, 4, 8, 32};
    for (Index k : opt.ks) {
        const double u = x_unit(k);
        for (auto [path, pn] : paths)
            for (auto [prec, qn] : precs)
                for (Index M : blocks) {
                    const std::string name =
                        "BM_HVP/k:" + std::to_string(k) + "/" + pn + "/" + qn + "/M:" + std::to_string(M);
                    // about 2.5 X-units per vector, 1.6 per vector in a block: the budget per run
                    const double est = (M == 1 ? 2.5 : 1.6 * double(M)) * u;
                    benchmark::RegisterBenchmark(name.c_str(), BM_HVP, k, path, prec, M)
                        ->Iterations(iterations_for(est, opt.seconds, M >= 32 ? 1 : 2))
                        ->UseRealTime()
                        ->Unit(benchmark::kMillisecond);
                }
        for (auto [path, pn] : paths)
            for (auto [how, hn] : {std::pair{Third::Exact, "exact"}, std::pair{Third::ExactWithHV, "exact_hv"},
                                   std::pair{Third::Differences, "differences"}})
                for (Index M : {1, 2}) {
                    const std::string name =
                        "BM_ThirdOrder/k:" + std::to_string(k) + "/" + pn + "/" + hn + "/M:" + std::to_string(M);
                    const double est = (how == Third::Differences ? 7.0 : 4.0) * u * double(M);  // X-units, roughly
                    benchmark::RegisterBenchmark(name.c_str(), BM_ThirdOrder, k, path, how, M)
                        ->Iterations(iterations_for(est, opt.seconds, 2))
                        ->UseRealTime()
                        ->Unit(benchmark::kMillisecond);
                }
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
