// Full-batch evaluation of the 784-50-10 sigmoid / softmax-ce network on the first k MNIST
// images, in X-product units (bench_support.hpp): the yardstick is one dense float64 product
// X (k x 784) W (784 x 50), measured in this program at start.
//
//   BM_XProduct/k          the yardstick itself, timed again as a benchmark (x_units ~ 1)
//   BM_Gradient/k/path/p   reset(theta) + gradient(): forward pass, loss, backprop
//   BM_Forward/k/path/p    reset(theta) alone: forward pass and loss (what FAR's adjoint pays to
//                          revisit a state whose gradient it kept, besides backprop's delta_l)
//   BM_Step/k/path/p       one gradient-descent step theta -= 0.1 grad (reset + gradient + axpy)
//
// path: 0 = dense, 1 = sparse (CSR);  p: 64 = float64, 32 = float32 products with X.
// Counters: ms (median per call), x_units = ms / yardstick ms of the same k; BM_Gradient also
// x_units_adj = median over iterations of (call time / yardstick timed right after it).
//
//   build-bench/evaluation_bench [--k=1000,10000,60000] [--seconds=1.5] [benchmark flags]
#include "bench_support.hpp"

#include "tdyn/evaluation.hpp"

namespace {

using namespace tdyn;
using namespace tdyn::bench;

void set_counters(benchmark::State& state, Index k, const Timer& tm, const AdjacentYardstick* adj = nullptr) {
    const double s = tm.median();
    state.counters["ms"] = s * 1e3;
    state.counters["x_units"] = s / x_unit(k);
    if (adj) state.counters["x_units_adj"] = adj->median_ratio();
}

void BM_XProduct(benchmark::State& state, Index k) {
    const RowMatrix& X = mnist_x(k);
    const RowMatrix W = RowMatrix::Random(X.cols(), 50) * 0.05;
    RowMatrix out(X.rows(), W.cols());
    out.noalias() = X * W;  // warm-up
    Timer tm;
    for (auto _ : state) {
        tm.start();
        out.noalias() = X * W;
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        tm.stop();
    }
    set_counters(state, k, tm);
}

void BM_Gradient(benchmark::State& state, Index k, XPath path, Precision prec) {
    const Dataset& ds = mnist(k);
    const InputMatrix X(ds.X, path, prec);
    const Vector theta = init_params(arch(), 1);
    Evaluation e(arch(), X, ds.T, theta);
    e.gradient();  // warm-up: buffers allocated
    Timer tm;
    AdjacentYardstick adj(k);
    time_with_yardstick(state, tm, adj, [&] {
        e.reset(theta);
        const Vector& g = e.gradient();
        benchmark::DoNotOptimize(g.data());
    });
    set_counters(state, k, tm, &adj);
    state.counters["loss"] = e.loss();
}

void BM_Forward(benchmark::State& state, Index k, XPath path, Precision prec) {
    const Dataset& ds = mnist(k);
    const InputMatrix X(ds.X, path, prec);
    const Vector theta = init_params(arch(), 1);
    Evaluation e(arch(), X, ds.T, theta);
    Timer tm;
    AdjacentYardstick adj(k);
    time_with_yardstick(state, tm, adj, [&] {
        e.reset(theta);
        benchmark::DoNotOptimize(e.output().data());
    });
    set_counters(state, k, tm, &adj);
    state.counters["loss"] = e.loss();
}

void BM_Step(benchmark::State& state, Index k, XPath path, Precision prec) {
    const Dataset& ds = mnist(k);
    const InputMatrix X(ds.X, path, prec);
    Vector theta = init_params(arch(), 1);
    Evaluation e(arch(), X, ds.T, theta);
    e.gradient();
    const double alpha = 0.1;
    Timer tm;
    for (auto _ : state) {
        tm.start();
        e.reset(theta);
        // theta_{t+1} = theta_t - alpha grad L(theta_t)
        theta.noalias() -= alpha * e.gradient();
        benchmark::DoNotOptimize(theta.data());
        tm.stop();
    }
    set_counters(state, k, tm);
    state.counters["loss"] = e.loss();
}

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse_options(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    measure_x_units(opt);

    const std::pair<XPath, const char*> paths[] = {{XPath::Dense, "dense"}, {XPath::Sparse, "sparse"}};
    const std::pair<Precision, const char*> precs[] = {{Precision::F64, "f64"}, {Precision::F32, "f32"}};
    for (Index k : opt.ks) {
        const std::string K = std::to_string(k);
        const double u = x_unit(k);
        benchmark::RegisterBenchmark(("BM_XProduct/k:" + K).c_str(), BM_XProduct, k)
            ->Iterations(iterations_for(u, opt.seconds, 5))
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        for (auto [path, pn] : paths)
            for (auto [prec, qn] : precs) {
                const std::string suffix = "/k:" + K + "/" + pn + "/" + qn;
                // about 3 X-units per gradient: enough iterations for ~opt.seconds
                const auto n = iterations_for(3 * u, opt.seconds, 3);
                benchmark::RegisterBenchmark(("BM_Gradient" + suffix).c_str(), BM_Gradient, k, path, prec)
                    ->Iterations(n)
                    ->UseRealTime()
                    ->Unit(benchmark::kMillisecond);
                benchmark::RegisterBenchmark(("BM_Forward" + suffix).c_str(), BM_Forward, k, path, prec)
                    ->Iterations(n)
                    ->UseRealTime()
                    ->Unit(benchmark::kMillisecond);
                benchmark::RegisterBenchmark(("BM_Step" + suffix).c_str(), BM_Step, k, path, prec)
                    ->Iterations(n)
                    ->UseRealTime()
                    ->Unit(benchmark::kMillisecond);
            }
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
