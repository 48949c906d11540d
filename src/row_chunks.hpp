// Internal to evaluation.cpp and hvp.cpp: the fixed row chunks over which every product and
// sum over samples is split. Their bounds depend on the row count alone, never on the thread
// count, so results have the same bits for any OMP_NUM_THREADS (docs/MATH.md, "Sums over
// samples and thread counts").
#pragma once

#include "tdyn/common.hpp"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tdyn::detail {

/// Below this many elements a pass runs on one thread: the fork/join costs more than it saves.
constexpr Index kParallelElems = Index(1) << 16;

/// Rows per chunk and the most chunks: one chunk per 1024 rows, 1 to 16. 16 chunks keep up to
/// 16 threads busy; each chunk of a sum costs one accumulator and one pass of the in-order
/// reduction, unless the sum runs in waves (sum_chunks_in_order: X^T C of an 8-vector block of
/// 784-50-10 holds 2 accumulators of 784 x 400 doubles, not 16).
constexpr Index kChunkRows = 1024, kMaxChunks = 16;
inline Index row_chunks(Index k) { return std::clamp<Index>(k / kChunkRows, 1, kMaxChunks); }

/// Row range [r0, r1) of chunk t of T over k rows: r0 = k t / T.
inline Index chunk_begin(Index k, Index t, Index T) { return k * t / T; }

/// Calls body(t) for the chunks t = 0..T-1, in parallel, with Eigen's GEMM single-threaded inside
/// every call. Eigen's own multi-threaded GEMM picks its depth blocking from the thread count
/// (GeneralBlockPanelKernel.h, evaluateProductBlockingSizesHeuristic), which changes the rounding
/// of every entry; a single-threaded GEMM's bits depend on its shape alone. Eigen reads its
/// thread count from the calling task's OpenMP ICV, set here to 1 (and restored for T = 1).
template <class F>
void for_each_chunk(Index T, F&& body) {
    if (T == 1) {
#ifdef _OPENMP
        const int saved = omp_get_max_threads();
        if (saved > 1) omp_set_num_threads(1);
#endif
        body(Index(0));
#ifdef _OPENMP
        if (saved > 1) omp_set_num_threads(saved);
#endif
        return;
    }
#pragma omp parallel
    {
#ifdef _OPENMP
        omp_set_num_threads(1);  // this task's GEMMs on one thread, whatever the team size
#endif
#pragma omp for schedule(static)
        for (Index t = 0; t < T; ++t) body(t);
    }
}

/// out = A B (or out += A B) with A k x p, as one single-threaded GEMM per row chunk, chunks in
/// parallel: the same bits for any thread count.
template <class MA, class MB, class MO>
void rows_product(const MA& A, const MB& B, MO&& out, bool add = false) {
    const Index k = A.rows(), T = row_chunks(k);
    for_each_chunk(T, [&](Index t) {
        const Index r0 = chunk_begin(k, t, T), n = chunk_begin(k, t + 1, T) - r0;
        // out[r0:r1] (+)= A[r0:r1] B
        if (add) out.middleRows(r0, n).noalias() += A.middleRows(r0, n) * B;
        else out.middleRows(r0, n).noalias() = A.middleRows(r0, n) * B;
    });
}

/// The calling thread's number in its team (0 without OpenMP), to pick per-thread scratch.
inline int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/// The most threads a parallel region started here may have (1 without OpenMP).
inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/// out = sum_t acc[t] in the fixed order t = 0, 1, ..., parallel over the rows of out.
template <class M, class O>
void reduce_in_order(const std::vector<M>& acc, Index T, O& out) {
    const Index rows = out.rows();
#pragma omp parallel for schedule(static) if (T > 1 && out.size() >= kParallelElems)
    for (Index i = 0; i < rows; ++i) {
        out.row(i) = acc[0].row(i);
        for (Index t = 1; t < T; ++t) out.row(i) += acc[t].row(i);
    }
}

/// out = part_0 + part_1 + ... + part_{T-1} over the T row chunks, added in that fixed order
/// (the bits of reduce_in_order over all T partial sums) while holding at most `held` partial
/// sums: the chunks run in waves of `held` (part(t, a) writes chunk t's sum into a), and each
/// wave's sums are added to out in chunk order before the next wave. held = T is one parallel
/// pass; held = the thread count saves memory but costs two fork/joins per wave, which a
/// loaded machine (another process on the second core) makes expensive.
template <class M, class F, class O>
void sum_chunks_in_order(Index T, Index held, std::vector<M>& acc, F&& part, O& out) {
    const Index W = std::clamp<Index>(held, 1, T), rows = out.rows();
    if (Index(acc.size()) < W) acc.resize(W);
    for (Index t0 = 0; t0 < T; t0 += W) {
        const Index n = std::min(W, T - t0);
        for_each_chunk(n, [&](Index j) { part(t0 + j, acc[j]); });
#pragma omp parallel for schedule(static) if (n > 1 && out.size() >= kParallelElems)
        for (Index i = 0; i < rows; ++i) {
            if (t0 == 0) out.row(i) = acc[0].row(i);
            else out.row(i) += acc[0].row(i);
            for (Index j = 1; j < n; ++j) out.row(i) += acc[j].row(i);
        }
    }
}

}  // namespace tdyn::detail
