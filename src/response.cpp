#include "tdyn/response.hpp"

#include "tdyn/data.hpp"
#include "tdyn/lyapunov.hpp"

#include <Eigen/Cholesky>
#include <Eigen/LU>
#include <Eigen/QR>
#include <cmath>

namespace tdyn {

namespace {

void report(const ResponseProgress& p, const char* phase, Index done, Index total) {
    if (p) p(phase, done, total);
}

/// b = (eps^T eps)^{-1} eps^T nu: the component of nu along the span of eps, in eps's coordinates.
Vector along(const Matrix& eps, const Vector& nu) {
    if (eps.cols() == 0) return Vector();
    return (eps.transpose() * eps).ldlt().solve(eps.transpose() * nu);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Vector step_noise(Index dim, std::uint64_t seed, Index n) {
    // splitmix64 of (seed, n): neighbouring steps and seeds get unrelated mt19937_64 streams.
    std::uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (std::uint64_t(n) + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return standard_normal(dim, 1, z ^ (z >> 31));
}

void check_kernel_options(const KernelOptions& o) {
    if (!(o.sigma > 0) || !std::isfinite(o.sigma))
        throw Error("sigma " + std::to_string(o.sigma) + ": must be a positive number");
    if (o.window < 1) throw Error("window " + std::to_string(o.window) + ": must be at least 1");
    if (o.burn_in < 0) throw Error("burn_in " + std::to_string(o.burn_in) + ": must be >= 0");
    if (o.batches < 2) throw Error("batches " + std::to_string(o.batches) + ": must be at least 2");
    if (o.steps - o.window - o.burn_in + 1 < o.batches)
        throw Error("steps " + std::to_string(o.steps) + ": need at least burn_in + window + batches - 1 = " +
                    std::to_string(o.burn_in + o.window + o.batches - 1));
}

namespace {
/// P xi_n: the step's noise without its exactly neutral components.
Vector projected_noise(const ResponseMap& map, std::uint64_t seed, Index n) {
    Matrix xi = step_noise(map.dim(), seed, n);
    map.project(xi);
    return xi.col(0);
}
}  // namespace

KernelResult kernel_response(ResponseMap& map, const Vector& x0, Index first, const KernelOptions& o,
                             const ResponseProgress& progress, KernelState* state, const KernelCheckpoint& checkpoint,
                             Index every) {
    check_kernel_options(o);
    const Index T = o.steps, B = o.burn_in, W = o.window, nb = o.batches, N = T - W - B + 1, per = N / nb;
    KernelState local;
    KernelState& st = state ? *state : local;
    if (st.x.size() == 0) {
        st = KernelState();
        st.x = x0;
        st.s = st.A = st.S = Vector::Zero(W);
        st.batch_A = Matrix::Zero(W, nb);
        st.batch_S = st.batch_count = Vector::Zero(nb);
    }
    if (st.s.size() != W || st.batch_S.size() != nb || st.n > T + 1)
        throw Error("kernel state: holds W = " + std::to_string(st.s.size()) + " and " +
                    std::to_string(st.batch_S.size()) + " batches, these options need " + std::to_string(W) + " and " +
                    std::to_string(nb));
    const auto batch = [&](Index m) { return std::min(nb - 1, (m - B) / per); };
    const auto counted = [&](Index m) { return m >= B && m <= T - W; };  // sources with all W partners
    KernelResult r;
    r.sources = N;
    const Index n0 = st.n;
    for (Index n = n0; n <= T; ++n) {
        if (checkpoint && n > n0 && n % every == 0 && !checkpoint(st)) {
            r.finished = false;
            return r;
        }
        map.at(first + n, st.x);
        const double Phi = map.phi();
        if (n > B) st.phi_sum += Phi;
        // Phi_n is the w-th partner of source m = n - w (read s_{n-W} before s_n takes its slot).
        for (Index w = 1; w <= W; ++w) {
            const Index m = n - w;
            if (!counted(m)) continue;
            const double sm = st.s[m % W];
            st.A[w - 1] += Phi * sm;
            st.S[w - 1] += sm;
            st.batch_A(w - 1, batch(m)) += Phi * sm;
        }
        if (n == T) {
            st.n = T + 1;
            break;
        }
        // x_{n+1} = f(x_n) + sigma xi_n;  s_n = X_n . xi_n / sigma
        const Vector xi = projected_noise(map, o.seed, n);
        const double sn = map.param_derivative().dot(xi) / o.sigma;
        st.s[n % W] = sn;
        if (counted(n)) {
            st.batch_S[batch(n)] += sn;
            st.batch_count[batch(n)] += 1;
        }
        st.x = map.next() + o.sigma * xi;
        if (!st.x.allFinite())
            throw Error("kernel: the noisy chain left the finite numbers at step " + std::to_string(first + n + 1));
        st.n = n + 1;
        report(progress, "kernel", n + 1, T);
    }
    // Centred by Phi_bar of the whole chain: sum (Phi - Phi_bar) s = A - Phi_bar S.
    r.average = st.phi_sum / double(T - B);
    r.contribution = (st.A - r.average * st.S) / double(N);
    r.derivative = r.contribution.sum();
    // Batch b's partial sums over w' <= w: (sum_{w' <= w} batch_A(w', b) - w Phi_bar batch_S_b) / count_b.
    r.partial_stderr.resize(W);
    Vector cum = Vector::Zero(nb);
    for (Index w = 1; w <= W; ++w) {
        cum += st.batch_A.row(w - 1).transpose();
        r.batch = (cum - r.average * double(w) * st.batch_S).cwiseQuotient(st.batch_count);
        const double mean = r.batch.mean();
        r.partial_stderr[w - 1] = std::sqrt((r.batch.array() - mean).square().sum() / double(nb - 1) / double(nb));
    }
    r.stderr_ = r.partial_stderr[W - 1];
    return r;
}

double noisy_average(ResponseMap& map, const Vector& x0, Index first, const KernelOptions& o) {
    check_kernel_options(o);
    Vector x = x0;
    double sum = 0;
    for (Index n = 0; n <= o.steps; ++n) {
        map.at(first + n, x);
        if (n > o.burn_in) sum += map.phi();
        if (n == o.steps) break;
        const Vector xi = projected_noise(map, o.seed, n);
        x = map.next() + o.sigma * xi;
        if (!x.allFinite()) return std::nan("");
    }
    return sum / double(o.steps - o.burn_in);
}

double batch_stderr(const Vector& v) {
    const Index n = v.size();
    if (n < 2) return std::nan("");
    const Index B = std::min<Index>(n, 10), size = n / B, skip = n - B * size;  // the first `skip` are dropped
    Vector means(B);
    for (Index b = 0; b < B; ++b) means[b] = v.segment(skip + b * size, size).mean();
    const double mean = means.mean();
    return std::sqrt((means.array() - mean).square().sum() / double(B - 1) / double(B));
}

// ---------------------------------------------------------------------------------------------

UnrolledResult unrolled_response(ResponseMap& map, const Vector& x0, Index first, Index T, Index checkpoint_every,
                                 const ResponseProgress& progress) {
    if (T < 1) throw Error("steps " + std::to_string(T) + ": the unrolled adjoint needs at least 1 step");
    if (checkpoint_every < 1) throw Error("checkpoint_every " + std::to_string(checkpoint_every) + ": must be >= 1");
    const Index C = checkpoint_every;
    UnrolledResult r;
    r.steps = T;
    // Forward: states at every C-th step kept, Phi(x_1..x_T) summed.
    std::vector<Vector> cp;
    Vector x = x0;
    double sum = 0;
    for (Index n = 0; n < T; ++n) {
        if (n % C == 0) cp.push_back(x);
        map.at(first + n, x);
        if (n >= 1) sum += map.phi();
        x = map.next();
        report(progress, "primal", n + 1, T);
    }
    map.at(first + T, x);
    sum += map.phi();
    r.average = sum / double(T);

    // Backward: lambda_T = grad Phi_T / T, then one recomputed segment at a time.
    Matrix lambda = map.grad_phi() / double(T), Jl;
    map.project(lambda);
    r.adjoint_norm.resize(T + 1);
    r.adjoint_norm[T] = lambda.norm();
    double g = 0;
    std::vector<Vector> xs, ms;
    for (Index s = Index(cp.size()) - 1; s >= 0; --s) {
        const Index n0 = s * C, n1 = std::min(T, n0 + C);  // states n0 .. n1-1
        xs.assign(1, cp[s]);
        ms.clear();  // the memos of states n0 .. n1-2 (the last one was never evaluated here)
        for (Index n = n0; n + 1 < n1; ++n) {
            map.at(first + n, xs.back());
            xs.push_back(map.next());
            ms.push_back(map.memo());
        }
        for (Index n = n1 - 1; n >= n0; --n) {
            if (n + 1 < n1) map.revisit(first + n, xs[n - n0], ms[n - n0]);
            else map.at(first + n, xs[n - n0]);
            // g += lambda_{n+1} . X_n;  lambda_n = J_n^T lambda_{n+1} + [n >= 1] grad Phi_n / T
            g += lambda.col(0).dot(map.param_derivative());
            map.jacobian_transpose(lambda, Jl);
            if (n >= 1) Jl.col(0) += map.grad_phi() / double(T);
            map.project(Jl);
            lambda.swap(Jl);
            r.adjoint_norm[n] = lambda.norm();
            report(progress, "adjoint", T - n, T);
        }
    }
    r.derivative = g;
    // Growth: ln |lambda_n| against T - n, least squares over the finite, non-zero norms.
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (Index n = 0; n <= T; ++n) {
        const double a = r.adjoint_norm[n];
        if (!(a > 0) || !std::isfinite(a)) continue;
        const double xx = double(T - n), yy = std::log(a);
        sw += 1, sx += xx, sy += yy, sxx += xx * xx, sxy += xx * yy;
    }
    r.growth_rate = sw > 1 ? (sw * sxy - sx * sy) / (sw * sxx - sx * sx) : std::nan("");
    r.mean_log_growth = mean_log_growth(r.adjoint_norm);
    return r;
}

double mean_log_growth(const Vector& adjoint_norm) {
    const Index T = adjoint_norm.size() - 1;
    if (T < 1) return std::nan("");
    const double first = adjoint_norm[0], last = adjoint_norm[T];
    if (!(first > 0) || !(last > 0) || !std::isfinite(first) || !std::isfinite(last)) return std::nan("");
    return (std::log(first) - std::log(last)) / double(T);
}

// ---------------------------------------------------------------------------------------------

void check_far_options(const FarOptions& o, Index dim) {
    if (o.unstable < 0 || o.unstable > dim)
        throw Error("unstable " + std::to_string(o.unstable) + ": must be between 0 and the dimension " +
                    std::to_string(dim));
    if (o.segment < 1) throw Error("segment " + std::to_string(o.segment) + ": must be at least 1");
    if (o.window < 0) throw Error("window " + std::to_string(o.window) + ": must be >= 0");
    if (o.segments < 1) throw Error("segments " + std::to_string(o.segments) + ": must be at least 1");
    if (!(o.keep_bytes >= 0)) throw Error("keep_bytes " + std::to_string(o.keep_bytes) + ": must be >= 0");
    if (o.initial_basis.size() && (o.initial_basis.rows() != dim || o.initial_basis.cols() != o.unstable))
        throw Error("initial_basis: " + std::to_string(o.initial_basis.rows()) + " x " +
                    std::to_string(o.initial_basis.cols()) + ", expected " + std::to_string(dim) + " x " +
                    std::to_string(o.unstable));
}

namespace {
/// The seeded random orthonormal basis FAR starts from without an initial basis.
Matrix random_basis(const ResponseMap& map, Index u, std::uint64_t seed) {
    TangentOptions t;
    t.vectors = u;
    t.seed = seed;
    Matrix e = TangentPropagator(map.dim(), t).basis();
    map.project(e);
    return e;
}
}  // namespace

AlignedBasis align_tangent_basis(ResponseMap& map, const Vector& x0, Index first, Index steps, Index vectors,
                                 Index qr_every, std::uint64_t seed, const ResponseProgress& progress) {
    const Index dim = map.dim();
    if (vectors < 1 || vectors > dim)
        throw Error("align vectors " + std::to_string(vectors) + ": must be between 1 and the dimension " +
                    std::to_string(dim));
    if (steps < 0) throw Error("align steps " + std::to_string(steps) + ": must be >= 0");
    if (qr_every < 1) throw Error("align qr_every " + std::to_string(qr_every) + ": must be at least 1");
    AlignedBasis r;
    Matrix e = random_basis(map, vectors, seed), Je, R;
    Vector log_sum = Vector::Zero(vectors);
    Vector x = x0;
    for (Index n = 0; n < steps; ++n) {
        map.at(first + n, x);
        map.jacobian(e, Je);
        map.project(Je);
        e.swap(Je);
        x = map.next();
        if ((n + 1) % qr_every == 0 || n + 1 == steps) {  // QR often enough that no vector over- or underflows
            Matrix Q;
            qr_positive(e, Q, R);
            log_sum += R.diagonal().array().log().matrix();
            e = Q;
        }
        report(progress, "align", n + 1, steps);
    }
    r.basis = e;
    r.exponents = steps > 0 ? Vector(log_sum / double(steps)) : Vector::Constant(vectors, std::nan(""));
    r.end = x;
    return r;
}

FarResult far_response(ResponseMap& map, const Vector& x0, Index first, const FarOptions& o,
                       const ResponseProgress& progress, FarState* state, const FarSegmentDone& on_segment) {
    const Index dim = map.dim();
    check_far_options(o, dim);
    const Index u = o.unstable, m = o.segment, W = o.window, K = o.segments, N = K * m, total = N + 2 * W;
    const bool with_unstable = o.unstable_part;
    FarState local;
    FarState& s = state ? *state : local;
    FarResult r;
    r.steps = N;
    const auto stopped = [&] {
        if (!on_segment || on_segment(s)) return false;
        r.finished = false;
        return true;
    };
    if (s.started == 0) {
        s = FarState();
        s.cp.resize(K + 1);
        s.Q.resize(K + 1);
        s.R.resize(K + 1);
        s.Phi = Vector::Zero(total + 1);
    }
    if (Index(s.cp.size()) != K + 1 || s.Phi.size() != total + 1 || s.started > K + 1 || s.adjoint_done > K)
        throw Error("far state: holds " + std::to_string(s.cp.size()) + " segment starts and " +
                    std::to_string(s.Phi.size()) + " values of Phi, these options need " + std::to_string(K + 1) +
                    " and " + std::to_string(total + 1));

    // The states, tangent blocks and memos of each step of the last segments the forward phase
    // ran, as many as keep_bytes allows: the adjoint takes them instead of recomputing (same bits).
    struct Kept {
        std::vector<Vector> xs;  // x_{W+km+i}, i = 0..m
        std::vector<Matrix> es;  // e there (es[0] = Q_k, es[m] = Q_{k+1} R_{k+1})
        std::vector<Vector> ms;  // the map's memo of x_{W+km+i}, i = 0..m-1
    };
    std::vector<Kept> kept(K);
    const double segment_bytes = 8.0 * double(m + 1) * double(u + 2) * double(dim);
    const Index keep_max = Index(std::min<double>(double(K), std::floor(o.keep_bytes / segment_bytes)));

    // 1-2. Primal x_0..x_{N+2W} with Phi_n, and the tangent e_{n+1} = J_n e_n from x_0 (the first
    // W steps align it); at each segment start x_{W+km}: the state, and e = Q_k R_k.
    if (!s.forward_done) {
        const bool resumed = s.started > 0;
        const Index n0 = resumed ? W + (s.started - 1) * m : 0;
        Vector x;
        Matrix e(dim, u), Je;
        if (resumed) {
            x = s.cp[s.started - 1];
            e = s.Q[s.started - 1];
        } else {
            x = x0;
            if (u > 0) {
                if (o.initial_basis.size()) {
                    e = o.initial_basis;
                    map.project(e);
                } else {
                    e = random_basis(map, u, o.seed);  // a seeded random orthonormal basis
                }
            }
        }
        Kept* cur = nullptr;
        std::vector<Index> held;  // the kept segments, oldest first
        for (Index n = n0; n <= total; ++n) {
            if (n >= W && (n - W) % m == 0 && (n - W) / m <= K) {
                const Index k = (n - W) / m;
                if (cur) {  // i = m of segment k - 1
                    cur->xs.push_back(x);
                    cur->es.push_back(e);
                    cur = nullptr;
                }
                if (!(resumed && n == n0)) {  // a resumed pass holds the start it continues from
                    s.cp[k] = x;
                    qr_positive(e, s.Q[k], s.R[k]);
                    e = s.Q[k];
                    s.started = k + 1;
                    s.phi_count = n;
                    if (stopped()) return r;
                }
                if (k < K && keep_max > 0) {
                    held.push_back(k);
                    if (Index(held.size()) > keep_max) {
                        kept[held.front()] = Kept();
                        held.erase(held.begin());
                    }
                    cur = &kept[k];
                }
            }
            if (cur) {
                cur->xs.push_back(x);
                cur->es.push_back(e);
            }
            map.at(first + n, x);
            s.Phi[n] = map.phi();
            if (n == total) break;
            if (n < W + N && u > 0) {
                map.jacobian(e, Je);
                map.project(Je);
                e.swap(Je);
            }
            x = map.next();
            if (cur) cur->ms.push_back(map.memo());
            report(progress, "primal", n + 1, total);
        }
        s.phi_count = total + 1;
        s.forward_done = true;
        if (stopped()) return r;
    }
    Vector log_sum = Vector::Zero(u);
    for (Index k = 1; k <= K; ++k) log_sum += s.R[k].diagonal().array().log().matrix();
    r.exponents = log_sum / double(N);
    const Vector& Phi = s.Phi;
    const double Phi_bar = Phi.mean();
    r.average = Phi_bar;
    // psi_n = sum_{w=-W}^{W} (Phi_{n+w} - Phi_bar), for W <= n <= W + N.
    Vector cum(total + 2);
    cum[0] = 0;
    for (Index n = 0; n <= total; ++n) cum[n + 1] = cum[n] + (Phi[n] - Phi_bar);
    auto psi = [&](Index n) { return cum[n + W + 1] - cum[n - W]; };

    // 3. Adjoint, segment by segment from the end. block = [eps | nu' | nu~'] (dim x (u + 2)).
    // Terminal: eps = Q_K, nu' = grad Phi(x_N), nu~' = 0.
    const Index cols = with_unstable ? u + 2 : u + 1;  // the shadowing part alone skips nu~'
    Matrix& block = s.block;
    Matrix Jblock, Jeps, Jnu;
    // At the start of segment k: nu' <- nu' - eps b_k, nu~' <- nu~' - eps b~_k (out of the span of eps).
    auto split = [&](Index k) {
        if (u == 0) return;
        const Matrix eps = block.leftCols(u);
        s.b.col(k) = along(eps, block.col(u));
        s.bt.col(k) = along(eps, block.col(u + 1));
        block.col(u) -= eps * s.b.col(k);
        block.col(u + 1) -= eps * s.bt.col(k);
    };
    if (s.adjoint_done == 0) {
        block = Matrix::Zero(dim, u + 2);
        block.leftCols(u) = s.Q[K];
        map.at(first + W + N, s.cp[K]);
        block.col(u) = map.grad_phi();
        map.project(block);
        s.b = Matrix::Zero(u, K + 1), s.bt = Matrix::Zero(u, K + 1);
        s.sp = Vector::Zero(K), s.up = Vector::Zero(K);
        s.g = Matrix::Zero(u, K), s.gpsi = Matrix::Zero(u, K);
        split(K);
    }
    std::vector<Vector> xr(m + 1), mr(m);
    std::vector<Matrix> er(m + 1);
    for (Index k = K - 1 - s.adjoint_done; k >= 0; --k) {
        const Index n0 = W + k * m;
        const bool have = !kept[k].xs.empty();
        if (!have) {
            // Recompute the segment from its start: states and tangent blocks.
            ++r.recomputed;
            xr[0] = s.cp[k];
            er[0] = s.Q[k];
            for (Index i = 0; i < m; ++i) {
                map.at(first + n0 + i, xr[i]);
                if (u > 0) {
                    map.jacobian(er[i], er[i + 1]);
                    map.project(er[i + 1]);
                }
                xr[i + 1] = map.next();
                mr[i] = map.memo();
            }
        }
        const std::vector<Vector>& xs = have ? kept[k].xs : xr;
        const std::vector<Matrix>& es = have ? kept[k].es : er;
        const std::vector<Vector>& ms = have ? kept[k].ms : mr;
        // Renormalise at the end of segment k: eps <- eps (e_end^T eps)^{-1}, so e^T eps = I on it
        // (e^T eps is invariant under the pair J, J^T).
        if (u > 0) block.leftCols(u) = Matrix(block.leftCols(u) * (es[m].transpose() * block.leftCols(u)).inverse());
        for (Index i = m - 1; i >= 0; --i) {
            const Index n = n0 + i;
            map.revisit(first + n, xs[i], ms[i]);
            const Vector X = map.param_derivative();
            const Matrix eps = block.leftCols(u);  // eps_{n+1}; block.col(u) = nu'_{n+1}, block.col(u+1) = nu~'_{n+1}
            s.sp[k] += block.col(u).dot(X);
            if (u > 0) s.g.col(k) += eps.transpose() * X;
            // eps_n = J^T eps_{n+1}; nu'_n = J^T nu'_{n+1} + grad Phi_n; nu~'_n = J^T nu~'_{n+1} + omega_n
            Vector omega;
            if (with_unstable) {
                const double p = psi(n + 1);
                s.up[k] += p * block.col(u + 1).dot(X);
                if (u > 0) {
                    s.up[k] += p * map.param_derivative_trace(es[i], es[i + 1], eps);
                    s.gpsi.col(k) += p * (eps.transpose() * X);
                    omega = map.second_derivative(es[i], eps, Jeps);  // and J^T eps from the same pass
                }
            }
            if (omega.size()) {
                map.jacobian_transpose(block.middleCols(u, 2), Jnu);
                Jblock.resize(dim, u + 2);
                Jblock << Jeps, Jnu;
            } else map.jacobian_transpose(block.leftCols(cols), Jblock);
            Jblock.col(u) += map.grad_phi();
            if (omega.size()) Jblock.col(u + 1) += omega;
            map.project(Jblock);
            block.leftCols(cols) = Jblock;
            report(progress, "adjoint", W + N - n, N);
        }
        split(k);
        kept[k] = Kept();
        s.adjoint_done = K - k;
        if (stopped()) return r;
    }

    // 4. Glue: a_0 = -b_0, a_k = R_k^{-T} a_{k-1} - b_k (likewise a~), so nu = nu' + eps a_k is
    // continuous across segments. 5. sc and uc per segment.
    Vector a = -s.b.col(0), at = -s.bt.col(0);
    r.segment_shadowing.resize(K);
    r.segment_unstable.resize(K);
    for (Index k = 0; k < K; ++k) {
        if (k > 0 && u > 0) {
            a = s.R[k].transpose().triangularView<Eigen::Lower>().solve(a) - s.b.col(k);
            at = s.R[k].transpose().triangularView<Eigen::Lower>().solve(at) - s.bt.col(k);
        }
        const double sc_k = s.sp[k] + (u > 0 ? s.g.col(k).dot(a) : 0);
        const double uc_k = s.up[k] + (u > 0 ? s.gpsi.col(k).dot(at) : 0);
        r.segment_shadowing[k] = sc_k / double(m);
        r.segment_unstable[k] = with_unstable ? -uc_k / double(m) : 0;
    }
    r.shadowing = r.segment_shadowing.mean();
    r.unstable = r.segment_unstable.mean();
    r.derivative = r.shadowing + r.unstable;
    r.stderr_ = batch_stderr(r.segment_shadowing + r.segment_unstable);
    return r;
}

// ---------------------------------------------------------------------------------------------

UnstableEstimate estimate_unstable_dim(ResponseMap& map, const Vector& x0, Index first, const BurnInOptions& o,
                                       const ResponseProgress& progress) {
    const Index dim = map.dim();
    if (o.vectors < 1 || o.vectors > dim)
        throw Error("burn-in vectors " + std::to_string(o.vectors) + ": must be between 1 and the dimension " +
                    std::to_string(dim));
    if (o.qr_every < 1) throw Error("burn-in qr_every " + std::to_string(o.qr_every) + ": must be at least 1");
    if (o.warmup < 0 || o.warmup % o.qr_every != 0)
        throw Error("burn-in warmup " + std::to_string(o.warmup) + ": must be a non-negative multiple of " +
                    std::to_string(o.qr_every));
    if (o.steps < o.warmup + o.qr_every)
        throw Error("burn-in steps " + std::to_string(o.steps) +
                    ": must be at least warmup + q = " + std::to_string(o.warmup + o.qr_every));
    TangentOptions t;
    t.vectors = o.vectors, t.qr_every = o.qr_every, t.warmup = o.warmup, t.seed = o.seed;
    TangentPropagator tp(dim, t);
    const auto apply = [&](const Matrix& V, Matrix& JV) {
        Matrix P = V;
        map.project(P);  // the neutral directions (J v = v exactly) would count as exponent 0
        map.jacobian(P, JV);
        map.project(JV);
    };
    Vector x = x0;
    for (Index n = 0; n < o.steps; ++n) {
        map.at(first + n, x);
        tp.step(apply);
        if (n + 1 < o.steps) x = map.next();
        report(progress, "burn-in", n + 1, o.steps);
    }
    UnstableEstimate r;
    r.exponents = tp.exponents();
    for (Index i = 0; i < r.exponents.size(); ++i)
        r.unstable += std::isfinite(r.exponents[i]) && r.exponents[i] > o.threshold;
    return r;
}

// ---------------------------------------------------------------------------------------------

ResponseParam parse_response_param(const std::string& name) {
    if (name == "lr") return ResponseParam::LearningRate;
    if (name == "weight-decay") return ResponseParam::WeightDecay;
    throw Error("param: expected lr or weight-decay, found '" + name + "'");
}

Observable parse_observable(const std::string& name) {
    if (name == "loss") return Observable::Loss;
    if (name == "test-loss") return Observable::TestLoss;
    throw Error("observable: expected loss or test-loss, found '" + name + "'");
}

std::string to_string(ResponseParam p) { return p == ResponseParam::LearningRate ? "lr" : "weight-decay"; }
std::string to_string(Observable o) { return o == Observable::Loss ? "loss" : "test-loss"; }
std::string to_string(SecondDerivative s) { return s == SecondDerivative::ROperator ? "r-operator" : "differences"; }
SecondDerivative parse_second_derivative(const std::string& name) {
    if (name == "r-operator") return SecondDerivative::ROperator;
    if (name == "differences") return SecondDerivative::Differences;
    throw Error("second derivative: '" + name + "' is not one of r-operator, differences");
}

GradientDescentMap::GradientDescentMap(const Architecture& arch, const Dataset& train, double alpha, double lambda,
                                       ResponseParam param, Observable observable, const Dataset* test,
                                       Precision precision, XPath x_path)
    : m_arch(arch), m_alpha(alpha), m_lambda(lambda), m_param(param), m_observable(observable) {
    if (observable == Observable::TestLoss && !test) throw Error("observable test-loss: no test data given");
    const EvaluationOptions options{lambda, nullptr};
    m_X = std::make_unique<InputMatrix>(train.X, x_path, precision);
    m_eval = std::make_unique<Evaluation>(arch, *m_X, train.T, options);
    m_shifted = std::make_unique<Evaluation>(arch, *m_X, train.T, options);
    m_shifted->set_products_only(true);  // it serves differences of H v: no gradient needed
    if (observable == Observable::TestLoss) {
        m_X_test = std::make_unique<InputMatrix>(test->X, x_path, precision);
        m_test = std::make_unique<Evaluation>(arch, *m_X_test, test->T);
    }
}

GradientDescentMap::~GradientDescentMap() = default;

void GradientDescentMap::at(Index, const Vector& theta) {
    m_eval->reset(theta);
    ++m_gradients;
    if (m_test) m_test->reset(theta);
}

void GradientDescentMap::revisit(Index n, const Vector& theta, const Vector& gradient) {
    if (gradient.size() == 0) return at(n, theta);
    m_eval->reset(theta, gradient);  // the forward pass alone: the products need its activations
    ++m_revisits;
    if (m_test) m_test->reset(theta);
}

Vector GradientDescentMap::next() {
    // theta_{n+1} = theta_n - alpha grad E(theta_n), E = L + lambda/2 |theta|^2 (as Trainer::step)
    Vector theta = m_eval->theta();
    theta.noalias() -= m_alpha * m_eval->gradient();
    return theta;
}

double GradientDescentMap::phi() { return m_test ? m_test->data_loss() : m_eval->data_loss(); }

Vector GradientDescentMap::grad_phi() {
    if (m_test) return m_test->gradient();  // no weight decay on the test Evaluation
    return m_eval->gradient() - m_lambda * m_eval->theta();
}

void GradientDescentMap::jacobian(const Matrix& V, Matrix& JV) {
    // J V = V - alpha H V
    JV.resize(V.rows(), V.cols());
    if (V.cols() == 0) return;
    m_eval->hessian_times(V, JV);
    m_hvps += V.cols();
    JV = V - m_alpha * JV;
}

Vector GradientDescentMap::param_derivative() {
    // alpha: X = -(grad L + lambda theta);  lambda: X = -alpha theta
    if (m_param == ResponseParam::LearningRate) return -m_eval->gradient();
    return -m_alpha * m_eval->theta();
}

double GradientDescentMap::param_derivative_trace(const Matrix& e, const Matrix& Je, const Matrix& eps) {
    // alpha: dX = -H, H e = (e - J e) / alpha;  lambda: dX = -alpha I
    if (m_param == ResponseParam::LearningRate) return -(eps.cwiseProduct(e - Je)).sum() / m_alpha;
    return -m_alpha * eps.cwiseProduct(e).sum();
}

Vector GradientDescentMap::second_derivative(const Matrix& e, const Matrix& eps) {
    // omega = -alpha sum_j grad(eps_j^T H e_j) = -alpha sum_j d/dr [H(theta + r e_j) eps_j] at r = 0
    // (the third derivative is symmetric): exactly, or by central differences along the unit e^_j.
    const Vector& theta = m_eval->theta();
    if (m_second == SecondDerivative::ROperator) {
        Matrix T(theta.size(), e.cols());
        m_eval->third_order_times(e, eps, T);
        m_third_order += e.cols();
        return -m_alpha * T.rowwise().sum();
    }
    Vector omega = Vector::Zero(theta.size());
    Matrix Hp(theta.size(), 1), Hm(theta.size(), 1);
    for (Index j = 0; j < e.cols(); ++j) {
        const double norm = e.col(j).norm();
        if (!(norm > 0)) continue;
        const Vector d = e.col(j) / norm;
        m_shifted->reset(theta + m_h * d);
        m_shifted->hessian_times(eps.col(j), Hp);
        m_shifted->reset(theta - m_h * d);
        m_shifted->hessian_times(eps.col(j), Hm);
        m_hvps += 2;
        m_shifted_evaluations += 2;
        omega.noalias() -= (m_alpha * norm / (2 * m_h)) * (Hp.col(0) - Hm.col(0));
    }
    return omega;
}

Vector GradientDescentMap::second_derivative(const Matrix& e, const Matrix& eps, Matrix& JtEps) {
    if (m_second != SecondDerivative::ROperator) return ResponseMap::second_derivative(e, eps, JtEps);
    // One third-order pass gives omega and H eps (J^T eps = eps - alpha H eps; J is symmetric).
    Matrix T(eps.rows(), eps.cols());
    JtEps.resize(eps.rows(), eps.cols());
    m_eval->third_order_times(e, eps, T, JtEps);
    m_third_order += e.cols();
    JtEps = eps - m_alpha * JtEps;
    return -m_alpha * T.rowwise().sum();
}

void GradientDescentMap::project(Matrix& V) const {
    if (m_arch.output != Output::SoftmaxCE || V.cols() == 0) return;
    // Subtract the class mean from each row of W_L (a hidden unit's outgoing weights) and from b_L.
    const Index L = m_arch.layers(), h = m_arch.widths[L - 1], c = m_arch.widths[L];
    const Index w0 = m_arch.weight_offset(L), b0 = m_arch.bias_offset(L);
    for (Index col = 0; col < V.cols(); ++col) {
        for (Index j = 0; j < h; ++j) {
            auto row = V.col(col).segment(w0 + j * c, c);
            row.array() -= row.mean();
        }
        auto bias = V.col(col).segment(b0, c);
        bias.array() -= bias.mean();
    }
}

Matrix neutral_directions(const Architecture& arch) {
    if (arch.output != Output::SoftmaxCE) return Matrix(arch.num_params(), 0);
    const Index L = arch.layers(), h = arch.widths[L - 1], c = arch.widths[L];
    Matrix N = Matrix::Zero(arch.num_params(), h + 1);
    const double v = 1 / std::sqrt(double(c));
    for (Index j = 0; j < h; ++j) N.col(j).segment(arch.weight_offset(L) + j * c, c).setConstant(v);
    N.col(h).segment(arch.bias_offset(L), c).setConstant(v);
    return N;
}

}  // namespace tdyn
