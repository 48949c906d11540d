// One gradient-descent step of the 784-50-10 sigmoid / softmax-ce network on MNIST with M
// tangent vectors carried along (tdyn train --lyapunov M): the forward pass and gradient at
// theta_t, the update, and V <- J(t) V = V - alpha H(theta_t) V with the same Evaluation,
// then the Householder QR of the P x M block. The yardstick is the dense float64 X-product
// of the same k (bench_support.hpp).
//
//   BM_StepWithTangents/k/M     M = 0 is the plain step (reset + gradient + update)
//
// Counters (median per step over the run's iterations):
//   x_units          the whole step
//   hvp_qr_units     the tangent part: J V and QR (step minus the plain step of the same run)
//   units_per_vec    hvp_qr_units / M
//   qr_ms, qr_share  the QR alone (timed inside the step) and its fraction of the step
//
//   build-bench/lyapunov_bench [--k=60000] [--seconds=1.5] [benchmark flags]
#include "bench_support.hpp"

#include "tdyn/evaluation.hpp"
#include "tdyn/lyapunov.hpp"

namespace {

using namespace tdyn;
using namespace tdyn::bench;

void BM_StepWithTangents(benchmark::State& state, Index k, Index M) {
    const Dataset& ds = mnist(k);
    const InputMatrix X(ds.X, XPath::Dense, Precision::F64);
    Vector theta = init_params(arch(), 1);
    Evaluation e(arch(), X, ds.T, theta);
    const double alpha = 0.1;
    TangentOptions o;
    o.vectors = std::max<Index>(M, 1);
    TangentPropagator tangent(e.num_params(), o);
    double apply_s = 0;
    auto one_step = [&](bool with_tangents) {
        e.reset(theta);
        const Vector& g = e.gradient();
        if (with_tangents) {
            tangent.step([&](const Matrix& V, Matrix& JV) {
                const auto t0 = Clock::now();
                apply_update_jacobian(e, alpha, V, JV);
                apply_s = seconds_since(t0);
            });
        }
        theta.noalias() -= alpha * g;  // theta_{t+1} = theta_t - alpha grad L(theta_t)
    };
    one_step(M > 0);  // buffers and first touch, untimed
    Timer step, plain, qr;
    for (auto _ : state) {
        step.start();
        one_step(M > 0);
        step.stop();
        qr.t.push_back(step.t.back() - apply_s);  // the step without J V: plain step + QR
        plain.start();
        one_step(false);  // the yardstick of the tangent part, in the same run
        plain.stop();
    }
    const double u = x_unit(k), s = step.median(), p = plain.median();
    state.counters["x_units"] = s / u;
    state.counters["plain_units"] = p / u;
    if (M > 0) {
        state.counters["hvp_qr_units"] = (s - p) / u;
        state.counters["units_per_vec"] = (s - p) / u / double(M);
        state.counters["qr_ms"] = (qr.median() - p) * 1e3;
        state.counters["qr_share"] = (qr.median() - p) / s;
    }
}

}  // namespace

int main(int argc, char** argv) {
    bool ks_given = false;
    for (int i = 0; i < argc; ++i) ks_given |= std::string(argv[i]).rfind("--k=", 0) == 0;
    Options opt = parse_options(argc, argv);
    if (!ks_given) opt.ks = {60000};  // the numbers are at k = 60000
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    measure_x_units(opt);
    for (Index k : opt.ks) {
        const double u = x_unit(k);
        for (Index M : {0, 1, 8, 32}) {
            const std::string name = "BM_StepWithTangents/k:" + std::to_string(k) + "/M:" + std::to_string(M);
            const double est = (2 * 2.7 + 1.9 * double(M)) * u;  // the step twice plus the block
            benchmark::RegisterBenchmark(name.c_str(), BM_StepWithTangents, k, M)
                ->Iterations(iterations_for(est, opt.seconds, M >= 32 ? 2 : 3))
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
        }
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
