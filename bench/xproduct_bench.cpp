// The sparse X path against the dense one, for the choice rule of InputMatrix (XPath::Auto:
// sparse when the density of X is below 0.3). Both products tdyn needs, out = X B (forward,
// R-operator) and out = X^T C (gradient of W_1), through InputMatrix itself, float64, the
// process's thread count, on the first k MNIST images with their density changed:
//   density < 0.19: MNIST's non-zeros kept with probability density / 0.19 (a fixed hash);
//   density > 0.19: MNIST plus 0.5 at zero entries chosen likewise;
// and n = the width of B and C: 50 (the seed network's hidden layer), 200, 400 (8 tangent
// vectors of the seed network's block products) and 1600 (8 vectors of a 200-wide layer).
//
//   BM_XPath/k/density_permille/n/dir   dir 0: X B, 1: X^T C
// Counters: dense_ms, sparse_ms (medians), speedup = median over iterations of dense/sparse
// timed back to back (a shared machine's load changes within a run), sparse_gflops =
// 2 nnz n / sparse time (useful flops), dense_gflops = 2 k d n / dense time.
//
//   build/xproduct_bench [--k=5000] [--seconds=1] [benchmark flags, e.g. --benchmark_filter=BM_XPath/5000/190/]
#include "bench_support.hpp"

#include "tdyn/evaluation.hpp"

#include <cstdint>

namespace {

using namespace tdyn;
using namespace tdyn::bench;

/// A fixed pseudo-random number in [0, 1) for entry i (splitmix64): the same X in every run.
double unit_hash(std::uint64_t i) {
    std::uint64_t z = i + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return double((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

/// MNIST's first k images with the density moved to about `density` (see the header).
const RowMatrix& x_with_density(Index k, int permille) {
    static std::map<std::pair<Index, int>, std::unique_ptr<RowMatrix>> cache;
    auto& slot = cache[{k, permille}];
    if (slot) return *slot;
    RowMatrix X = mnist_x(k);
    const double base = double((X.array() != 0.0).count()) / double(X.size()), target = permille / 1000.0;
    for (Index i = 0; i < X.size(); ++i) {
        double& x = X.data()[i];
        const double h = unit_hash(std::uint64_t(i));
        if (target < base && x != 0.0 && h >= target / base) x = 0.0;
        if (target > base && x == 0.0 && h < (target - base) / (1.0 - base)) x = 0.5;
    }
    slot = std::make_unique<RowMatrix>(std::move(X));
    return *slot;
}

void BM_XPath(benchmark::State& state) {
    const Index k = state.range(0), n = state.range(2);
    const int permille = int(state.range(1));
    const bool transpose = state.range(3) == 1;
    const RowMatrix& X = x_with_density(k, permille);
    const InputMatrix dense(X, XPath::Dense), sparse(X, XPath::Sparse);
    const RowMatrix B = RowMatrix::Random(transpose ? k : X.cols(), n);
    RowMatrix out;
    auto run = [&](const InputMatrix& m) {
        const auto t0 = Clock::now();
        if (transpose) m.transpose_times(B, out);
        else m.times(B, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        return seconds_since(t0);
    };
    run(dense), run(sparse);  // warm-up: scratch and accumulators grown
    std::vector<double> td, ts, ratio;
    for (auto _ : state) {
        const double a = run(dense), b = run(sparse);
        td.push_back(a), ts.push_back(b), ratio.push_back(a / b);
    }
    const double nnz = double((X.array() != 0.0).count());
    state.counters["density"] = nnz / double(X.size());
    state.counters["dense_ms"] = median(td) * 1e3;
    state.counters["sparse_ms"] = median(ts) * 1e3;
    state.counters["speedup"] = median(ratio);
    state.counters["sparse_gflops"] = 2 * nnz * double(n) / median(ts) * 1e-9;
    state.counters["dense_gflops"] = 2 * double(X.size()) * double(n) / median(td) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    opt.ks = {5000};
    opt.seconds = 1.0;
    {
        const Options given = parse_options(argc, argv);
        if (given.ks != Options{}.ks) opt.ks = given.ks;
        if (given.seconds != Options{}.seconds) opt.seconds = given.seconds;
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    for (Index k : opt.ks)
        for (int permille : {50, 100, 190, 300, 500})
            for (Index n : {50, 200, 400, 1600})
                for (int dir : {0, 1}) {
                    // iterations from a rough cost of one dense + one sparse product (~10 GFLOP/s)
                    const double est = 2 * 2.0 * double(k) * 784.0 * double(n) / 10e9;
                    benchmark::RegisterBenchmark("BM_XPath", BM_XPath)
                        ->Args({k, permille, n, dir})
                        ->Iterations(iterations_for(est, opt.seconds, 3, 200))
                        ->Unit(benchmark::kMillisecond)
                        ->UseRealTime();
                }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
}
