#include "tdyn/evaluation.hpp"

#include "row_chunks.hpp"
#include "tdyn/activation.hpp"
#include "tdyn/loss.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tdyn {

Precision parse_precision(const std::string& name) {
    if (name == "f64") return Precision::F64;
    if (name == "f32") return Precision::F32;
    throw Error("precision: expected f64 or f32, found '" + name + "'");
}

XPath parse_xpath(const std::string& name) {
    if (name == "auto") return XPath::Auto;
    if (name == "dense") return XPath::Dense;
    if (name == "sparse") return XPath::Sparse;
    throw Error("x_path: expected auto, dense or sparse, found '" + name + "'");
}

// ---------------------------------------------------------------------------------------------
// InputMatrix

namespace {

using detail::chunk_begin;
using detail::kParallelElems;
using detail::row_chunks;
using detail::rows_product;

/// dst = src cast to dst's scalar, row-parallel; dst is resized to src's shape.
template <class Src, class Dst>
void cast_rows(const Src& src, Dst& dst) {
    resize_huge(dst, src.rows(), src.cols());
    const Index rows = src.rows();
#pragma omp parallel for schedule(static) if (src.size() >= kParallelElems)
    for (Index i = 0; i < rows; ++i) dst.row(i) = src.row(i).template cast<typename Dst::Scalar>();
}

}  // namespace

namespace {

/// x as float64: pixel / 255 for a pixel byte (InputData::pixel_value: the same double as
/// double(pixel) / 255.0), the value itself for float data.
double entry_value(std::uint8_t pixel) { return InputData::pixel_value(pixel); }
double entry_value(double x) { return x; }

/// pixel / 255 in scalar S for every byte: the float64 value cast to S.
/// The pixel bytes of a k x d image set, row-major: x_ij = pixel / 255 (entry_value).
struct PixelRows {
    const std::uint8_t* px;
    Index d;
    std::uint8_t operator()(Index i, Index j) const { return px[i * d + j]; }
    const std::uint8_t* row(Index i) const { return px + i * d; }
};

/// The high bit of every byte of w that is not zero, the other bits clear: (b & 0x7f) + 0x7f sets
/// bit 7 unless the low seven bits are zero (no carry out of the byte), b's own bit 7 the rest.
std::uint64_t nonzero_bytes(std::uint64_t w) {
    constexpr std::uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    return (((w & low7) + low7) | w) & ~low7;
}

/// Writes the columns and bytes of the non-zero pixels of a row of d bytes to col and val, in
/// column order, and returns how many: eight bytes at a time, visiting only the non-zeros of a
/// word (81 % of MNIST's pixels are zero), so the work follows nnz rather than k d (2.1x faster
/// than a branch-free pass over every pixel, single thread on MNIST: 39 against 83 ms).
Index compact_row(const std::uint8_t* row, Index d, std::int32_t* col, std::uint8_t* val) {
    Index q = 0, j = 0;
    if constexpr (std::endian::native == std::endian::little) {
        for (; j + 8 <= d; j += 8) {
            std::uint64_t w;
            std::memcpy(&w, row + j, 8);
            for (std::uint64_t m = nonzero_bytes(w); m != 0; m &= m - 1) {
                const int b = std::countr_zero(m) >> 3;  // byte b of the word is column j + b
                col[q] = std::int32_t(j + b);
                val[q] = std::uint8_t(w >> (8 * b));
                ++q;
            }
        }
    }
    for (; j < d; ++j)
        if (row[j] != 0) {
            col[q] = std::int32_t(j);
            val[q] = row[j];
            ++q;
        }
    return q;
}

/// The number of non-zero bytes in a row of d bytes.
Index count_nonzero(const std::uint8_t* row, Index d) {
    Index n = 0, j = 0;
    for (; j + 8 <= d; j += 8) {
        std::uint64_t w;
        std::memcpy(&w, row + j, 8);
        n += std::popcount(nonzero_bytes(w));
    }
    for (; j < d; ++j) n += row[j] != 0;
    return n;
}

template <class S>
const S* pixel_table() {
    static const std::array<S, 256> table = [] {
        std::array<S, 256> t{};
        for (int p = 0; p < 256; ++p) t[std::size_t(p)] = S(InputData::pixel_value(std::uint8_t(p)));
        return t;
    }();
    return table.data();
}

/// The sparse products' tiles, sized (measured, tools: bench/xproduct_bench) so that what a
/// panel of W columns reads over and over stays in the 32 KB L1 or the 1 MB L2:
///   X B:     rows in blocks of kTileRows, X's columns in blocks of kTileCols: a tile's rows of B
///            (128 x 64 doubles = 64 KB) serve the block's 64 rows;
///   X^T C:   X by columns in blocks of kTileRows rows (a row's place in its block fits a byte):
///            a block's rows of C (64 x 64 doubles = 32 KB) serve all 784 columns.
constexpr Index kTileRows = 64, kTileCols = 128;

/// X B's blocks of X's columns for d columns.
constexpr Index column_blocks(Index d) { return (d + kTileCols - 1) / kTileCols; }

/// Columns per panel of the sparse products, W = 64 doubles or 128 floats: W accumulators fill
/// eight AVX-512 registers (sixteen AVX2 ones), so each non-zero costs W/8 loads and W/8 FMAs
/// and no store (Eigen's row += x * row loads and stores the whole destination row per
/// non-zero), and its index and value are read once for W columns.
template <class S>
constexpr int kPanel = int(512 / sizeof(S));

/// Calls f.template operator()<W>(c0) for column panels covering [c0, n) in halving widths
/// (W, W/2, ..., 1), as many of each as fit, so every panel's width is a constant.
template <int W, class F>
void for_each_halving_panel(Index c0, Index n, F&& f) {
    for (; c0 + W <= n; c0 += W) f.template operator()<W>(c0);
    if constexpr (W > 1) for_each_halving_panel<W / 2>(c0, n, f);
}

/// Calls f.template operator()<W>(c0) for column panels covering [0, n), each of a constant
/// width: as many of kPanel<S> as fit, then the rest. Float64 takes the rest (1-63 columns) in
/// one panel of exactly its width, so X's non-zeros are read once per 64 columns: in halving
/// widths the seed network's 50 hidden units took three passes (32 + 16 + 2) and its products
/// 1.7x the time of 64 (BENCHMARKS.md, "Panel widths"). Float32 keeps the halving widths (64,
/// 32, ..., 1 after 128): 127 exact widths would triple evaluation.cpp's compile time.
template <class S, class F>
void for_each_panel(Index n, F&& f) {
    constexpr int W = kPanel<S>;
    Index c0 = 0;
    for (; c0 + W <= n; c0 += W) f.template operator()<W>(c0);
    if (c0 == n) return;
    if constexpr (std::is_same_v<S, double>) {
        const int rest = int(n - c0);
        [&]<int... w>(std::integer_sequence<int, w...>) {
            ((rest == w + 1 ? (f.template operator()<w + 1>(c0), true) : false) || ...);
        }
        (std::make_integer_sequence<int, W - 1>{});
    } else for_each_halving_panel<W / 2>(c0, n, f);
}

/// acc + v r rounded once where the CPU has FMA (then every width and instantiation of the loop
/// below rounds alike; left to -ffp-contract, GCC fused some and not others), else twice.
/// (__FMA__: x86 with FMA; __FP_FAST_FMA: other targets whose fma is an instruction.)
template <class S>
inline S multiply_add(S v, S r, S acc) {
#if defined(__FMA__) || defined(__FP_FAST_FMA)
    return std::fma(v, r, acc);
#else
    return acc + v * r;
#endif
}

/// acc[0:W] (+)= sum over p in [p0, p1), in that order, of value(p) row(p)[0:W]: the one inner
/// loop of both sparse products, acc held in registers.
template <int W, class S, class V, class R>
void sparse_axpy(Index p0, Index p1, const V& value, const R& row, S* __restrict acc_out, bool add) {
    S acc[W];
#pragma GCC unroll 128
    for (int w = 0; w < W; ++w) acc[w] = add ? acc_out[w] : S(0);
    for (Index p = p0; p < p1; ++p) {
        const S v = value(p);
        const S* __restrict r = row(p);
#pragma GCC unroll 128
        for (int w = 0; w < W; ++w) acc[w] = multiply_add(v, r[w], acc[w]);
    }
#pragma GCC unroll 128
    for (int w = 0; w < W; ++w) acc_out[w] = acc[w];
}

}  // namespace

template <class Entry>
void InputMatrix::build_nonzeros(Entry x) {
    const Index k = rows(), d = cols();
    constexpr bool pixels = std::is_same_v<decltype(x(0, 0)), std::uint8_t>;
    if (d > Index(std::numeric_limits<std::int32_t>::max()))
        throw Error("X: " + std::to_string(d) +
                    " columns, more than the sparse path's column index holds; use x_path dense");
    // a non-zero of the path's scalar (float data: a float64 value too small for float is a zero)
    auto nonzero = [&](Index i, Index j) {
        if constexpr (pixels) return x(i, j) != 0;
        else return m_precision == Precision::F32 ? float(x(i, j)) != 0.0f : x(i, j) != 0.0;
    };
    // two row-parallel passes (count, then fill) into storage of exactly nnz entries
    m_start.assign(std::size_t(k) + 1, 0);
#pragma omp parallel for schedule(static) if (k * d >= kParallelElems)
    for (Index i = 0; i < k; ++i) {
        Index n = 0;
        if constexpr (pixels) n = count_nonzero(x.row(i), d);
        else
            for (Index j = 0; j < d; ++j) n += nonzero(i, j);
        m_start[std::size_t(i) + 1] = n;
    }
    for (Index i = 0; i < k; ++i) m_start[std::size_t(i) + 1] += m_start[std::size_t(i)];
    const std::size_t nnz = std::size_t(m_start[std::size_t(k)]);
    m_pixels = pixels;
    m_col.resize(nnz);
    if constexpr (pixels) m_pixel.resize(nnz);
    else if (m_precision == Precision::F32) m_val32.resize(nnz);
    else m_val64.resize(nnz);
    if constexpr (pixels) {
#pragma omp parallel for schedule(static) if (k * d >= kParallelElems)
        for (Index i = 0; i < k; ++i) {
            const auto p = std::ptrdiff_t(m_start[std::size_t(i)]);
            compact_row(x.row(i), d, m_col.data() + p, m_pixel.data() + p);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (k * d >= kParallelElems)
    for (Index i = 0; i < k; ++i) {
        std::size_t p = std::size_t(m_start[std::size_t(i)]);
        for (Index j = 0; j < d; ++j) {
            if (!nonzero(i, j)) continue;
            m_col[p] = std::int32_t(j);
            if (m_precision == Precision::F32) m_val32[p] = float(x(i, j));
            else m_val64[p] = x(i, j);
            ++p;
        }
    }
}

template <class S, class F>
void InputMatrix::with_values(bool by_columns, F&& f) const {
    if (m_pixels) {
        const std::uint8_t* px = by_columns ? m_tpixel.data() : m_pixel.data();
        const S* table = pixel_table<S>();
        f([px, table](Index p) { return table[px[p]]; });
        return;
    }
    const S* v = nullptr;
    if constexpr (std::is_same_v<S, float>) v = by_columns ? m_tval32.data() : m_val32.data();
    else v = by_columns ? m_tval64.data() : m_val64.data();
    f([v](Index p) { return v[p]; });
}

void InputMatrix::build_tiles() {
    const Index k = rows(), d = cols(), T = row_chunks(k);
    // blocks of kTileRows rows from each chunk's first row, the last of a chunk shorter;
    // m_block_row0 ends with k, so block b's rows are [m_block_row0[b], m_block_row0[b + 1])
    m_block_row0.clear();
    m_chunk_block.assign(1, 0);
    for (Index t = 0; t < T; ++t) {
        const Index r1 = chunk_begin(k, t + 1, T);
        for (Index r = chunk_begin(k, t, T); r < r1; r += kTileRows) m_block_row0.push_back(r);
        m_chunk_block.push_back(Index(m_block_row0.size()));
    }
    const Index nb = m_chunk_block.back();
    m_block_row0.push_back(k);
    const Index* row0 = m_block_row0.data();
    const Index* start = m_start.data();
    const std::int32_t* col = m_col.data();
    const Index nnz = start[k];
    // X B's column blocks: row i's first non-zero at or after column kTileCols J, J = 0..nJ
    const Index nJ = column_blocks(d);
    m_split.resize(std::size_t(k * (nJ + 1)));
#pragma omp parallel for schedule(static) if (nnz >= kParallelElems)
    for (Index i = 0; i < k; ++i) {
        Index p = start[i];
        for (Index J = 0; J < nJ; ++J) {
            while (p < start[i + 1] && col[p] < kTileCols * J) ++p;
            m_split[std::size_t(i * (nJ + 1) + J)] = p;
        }
        m_split[std::size_t(i * (nJ + 1) + nJ)] = start[i + 1];
    }
    // count block b's column j at m_tstart[b (d + 1) + j + 1]; one running sum over all blocks
    // then makes every entry the start of its column (block b's first: block b - 1's end)
    m_tstart.assign(std::size_t(nb * (d + 1)), 0);
#pragma omp parallel for schedule(static) if (nnz >= kParallelElems)
    for (Index b = 0; b < nb; ++b) {
        Index* count = m_tstart.data() + b * (d + 1) + 1;
        for (Index p = start[row0[b]]; p < start[row0[b + 1]]; ++p) ++count[col[p]];
    }
    for (std::size_t q = 1; q < m_tstart.size(); ++q) m_tstart[q] += m_tstart[q - 1];
    m_trow.resize(std::size_t(nnz));
    if (m_pixels) m_tpixel.resize(std::size_t(nnz));
    else if (m_precision == Precision::F32) m_tval32.resize(std::size_t(nnz));
    else m_tval64.resize(std::size_t(nnz));
#pragma omp parallel for schedule(static) if (nnz >= kParallelElems)
    for (Index b = 0; b < nb; ++b) {
        // rows in ascending order into their columns: each column's non-zeros in ascending row
        std::vector<Index> next(m_tstart.begin() + b * (d + 1), m_tstart.begin() + b * (d + 1) + d);
        for (Index i = row0[b]; i < row0[b + 1]; ++i)
            for (Index p = start[i]; p < start[i + 1]; ++p) {
                const auto q = std::size_t(next[std::size_t(col[p])]++);
                m_trow[q] = std::uint8_t(i - row0[b]);
                if (m_pixels) m_tpixel[q] = m_pixel[std::size_t(p)];
                else if (m_precision == Precision::F32) m_tval32[q] = m_val32[std::size_t(p)];
                else m_tval64[q] = m_val64[std::size_t(p)];
            }
    }
}

template <class Entry>
void InputMatrix::build(Entry x, Index nonzeros, XPath path, double sparse_threshold, const SampleComm* comm) {
    const Index k = rows(), d = cols();
    // (non-zeros, entries) of all ranks' rows: exact sums of integers below 2^53
    double count[2] = {double(nonzeros), double(k) * double(d)};
    if (comm && path == XPath::Auto) comm->sum(count, 2);
    m_density = count[1] > 0 ? count[0] / count[1] : 1.0;
    m_sparse = path == XPath::Sparse || (path == XPath::Auto && m_density < sparse_threshold);
    if (m_sparse) {
        // X's non-zeros row by row (split at column blocks) for X B, and by columns within
        // blocks of rows for X^T C
        build_nonzeros(x);
        build_tiles();
    } else if (m_precision == Precision::F32) {
        // X in float: each entry the float64 x_ij cast to float
        resize_huge(m_X32, k, d);
#pragma omp parallel for schedule(static) if (k * d >= kParallelElems)
        for (Index i = 0; i < k; ++i)
            for (Index j = 0; j < d; ++j) m_X32(i, j) = float(entry_value(x(i, j)));
    }
}

InputMatrix::InputMatrix(const RowMatrix& X, XPath path, Precision precision, double sparse_threshold,
                         const SampleComm* comm)
    : m_X(X.data(), X.rows(), X.cols()), m_precision(precision) {
    build([&X](Index i, Index j) { return X(i, j); }, Index((X.array() != 0.0).count()), path, sparse_threshold, comm);
}

InputMatrix::InputMatrix(const InputData& X, XPath path, Precision precision, double sparse_threshold,
                         const SampleComm* comm)
    : m_X(X.has_pixels() ? nullptr : X.values().data(), X.rows(), X.cols()), m_precision(precision) {
    if (!X.has_pixels()) {
        build([&V = X.values()](Index i, Index j) { return V(i, j); }, X.nonzeros(), path, sparse_threshold, comm);
        return;
    }
    // the pixel bytes themselves: x_ij = pixel / 255 (entry_value)
    build(PixelRows{X.pixels().data(), X.cols()}, X.nonzeros(), path, sparse_threshold, comm);
    if (!m_sparse && m_precision == Precision::F64) {
        // the dense float64 path multiplies with X itself: its own k x d float64 copy
        m_Xown = X.dense();
        new (&m_X) Eigen::Map<const RowMatrix>(m_Xown.data(), m_Xown.rows(), m_Xown.cols());
    }
}

template <class S>
void InputMatrix::product(const Eigen::Ref<const RowMatrixT<S>>& B, Eigen::Ref<RowMatrixT<S>> out) const {
    assert(B.rows() == cols() && out.rows() == rows() && out.cols() == B.cols());
    assert(m_precision == (std::is_same_v<S, float> ? Precision::F32 : Precision::F64));
    if (!m_sparse) {
        // out = X B by Eigen's GEMM, per row chunk
        if constexpr (std::is_same_v<S, float>) rows_product(m_X32, B, out);
        else rows_product(m_X, B, out);
        return;
    }
    // Row i of out = sum over row i's non-zeros of x_ij B_j, in column order (Eigen's CSR
    // product does the same): each entry one sparse dot product, so any thread count gives
    // the same bits. Blocks of kTileRows rows in parallel; within a block, one panel of W
    // columns at a time, X's columns in blocks of kTileCols (row i's non-zeros in column block
    // J are [m_split[i (J_n + 1) + J], m_split[i (J_n + 1) + J + 1]), in order.
    const Index k = rows(), n = B.cols(), ldb = B.outerStride(), ldo = out.outerStride();
    const Index nJ = column_blocks(cols());
    const Index* split = m_split.data();
    const std::int32_t* col = m_col.data();
    const S* Bp = B.data();
    S* outp = out.data();
    const Index blocks = (k + kTileRows - 1) / kTileRows;
    with_values<S>(false, [&](const auto& value) {
#pragma omp parallel for schedule(static) if (Index(m_col.size()) * n >= kParallelElems)
        for (Index b = 0; b < blocks; ++b) {
            const Index i0 = b * kTileRows, i1 = std::min(k, i0 + kTileRows);
            for_each_panel<S>(n, [&]<int W>(Index c0) {
                auto row = [&](Index p) { return Bp + Index(col[p]) * ldb + c0; };
                for (Index J = 0; J < nJ; ++J)
                    for (Index i = i0; i < i1; ++i) {
                        const Index* sp = split + i * (nJ + 1) + J;
                        if (J == 0 || sp[0] < sp[1])
                            sparse_axpy<W, S>(sp[0], sp[1], value, row, outp + i * ldo + c0, J > 0);
                    }
            });
        }
    });
}

template <class S>
void InputMatrix::transpose_product(const Eigen::Ref<const RowMatrixT<S>>& C, Eigen::Ref<RowMatrixT<S>> out) const {
    assert(C.rows() == rows() && out.rows() == cols() && out.cols() == C.cols());
    chunked_transpose_product<S>(C, out);
}

template <class S>
void InputMatrix::chunked_transpose_product(const Eigen::Ref<const RowMatrixT<S>>& C,
                                            Eigen::Ref<RowMatrixT<S>> out) const {
    const Index k = rows(), d = cols(), n = C.cols(), T = row_chunks(k);
    auto& acc = [this]() -> auto& {
        if constexpr (std::is_same_v<S, float>) return m_acc32;
        else return m_acc64;
    }
    ();
    auto part = [&](Index t, RowMatrixT<S>& a) {
        const Index r0 = chunk_begin(k, t, T), r1 = chunk_begin(k, t + 1, T);
        a.resize(d, n);
        if (!m_sparse) {
            // acc_t = X[r0:r1]^T C[r0:r1]  (Eigen GEMM, single-threaded)
            if constexpr (std::is_same_v<S, float>)
                a.noalias() = m_X32.middleRows(r0, r1 - r0).transpose() * C.middleRows(r0, r1 - r0);
            else a.noalias() = m_X.middleRows(r0, r1 - r0).transpose() * C.middleRows(r0, r1 - r0);
            return;
        }
        // acc_t = sum_{i in chunk} x_i^T c_i: row j of acc = sum over column j's non-zeros x_ij c_i,
        // through the chunk's column blocks in order, rows ascending in each (the order of a
        // row-by-row scatter). One column panel at a time: the panel of acc (784 x 64 doubles)
        // and a block's rows of C stay in cache.
        a.setZero();
        const Index ldc = C.outerStride(), lda = a.cols();
        const Index* row0 = m_block_row0.data();
        const std::uint8_t* trow = m_trow.data();
        S* ap = a.data();
        with_values<S>(true, [&](const auto& value) {
            for_each_panel<S>(n, [&]<int W>(Index c0) {
                for (Index b = m_chunk_block[std::size_t(t)]; b < m_chunk_block[std::size_t(t) + 1]; ++b) {
                    const Index* tstart = m_tstart.data() + b * (d + 1);
                    const S* Cb = C.data() + row0[b] * ldc + c0;
                    auto row = [&](Index p) { return Cb + Index(trow[p]) * ldc; };
                    for (Index j = 0; j < d; ++j)
                        if (tstart[j] < tstart[j + 1])
                            sparse_axpy<W, S>(tstart[j], tstart[j + 1], value, row, ap + j * lda + c0, true);
                }
            });
        });
    };
    // out = acc_0 + acc_1 + ... in chunk order. All T accumulators at once up to 32 MB (the
    // gradient, blocks of up to 3 vectors of 784-50-10 at k = 60000), else one per thread
    // (8 vectors: 40 MB -> 5 MB); the same bits either way.
    const bool all_at_once = double(T) * double(d) * double(n) * sizeof(S) <= 32e6;
    detail::sum_chunks_in_order(T, all_at_once ? T : Index(detail::max_threads()), acc, part, out);
}

template void InputMatrix::product<double>(const Eigen::Ref<const RowMatrix>&, Eigen::Ref<RowMatrix>) const;
template void InputMatrix::product<float>(const Eigen::Ref<const RowMatrixF>&, Eigen::Ref<RowMatrixF>) const;
template void InputMatrix::transpose_product<double>(const Eigen::Ref<const RowMatrix>&, Eigen::Ref<RowMatrix>) const;
template void InputMatrix::transpose_product<float>(const Eigen::Ref<const RowMatrixF>&, Eigen::Ref<RowMatrixF>) const;

void InputMatrix::times(const Eigen::Ref<const RowMatrix>& B, RowMatrix& out) const {
    resize_huge(out, m_X.rows(), B.cols());
    if (m_precision == Precision::F32) {
        // float copies of B and of the result live in mutable scratch: no allocation once grown
        cast_rows(B, m_in32);
        resize_huge(m_out32, m_X.rows(), B.cols());
        product<float>(m_in32, m_out32);
        cast_rows(m_out32, out);
    } else {
        product<double>(B, out);
    }
}

void InputMatrix::transpose_times(const Eigen::Ref<const RowMatrix>& C, RowMatrix& out) const {
    out.resize(m_X.cols(), C.cols());
    if (m_precision == Precision::F32) {
        cast_rows(C, m_in32);
        m_out32.resize(m_X.cols(), C.cols());
        transpose_product<float>(m_in32, m_out32);
        out = m_out32.cast<double>();
    } else {
        transpose_product<double>(C, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

Evaluation::Evaluation(const Architecture& arch, const InputMatrix& X, const RowMatrix& T,
                       const EvaluationOptions& options)
    : m_arch(arch), m_X(X), m_T(T.data(), T.rows(), T.cols()), m_comm(options.comm ? options.comm : &local_comm()) {
    // The messages name the parameter (arch); the apps show it as the flag (--arch).
    if (X.cols() != arch.inputs())
        throw Error("arch " + arch.to_string() + ": input width " + std::to_string(arch.inputs()) +
                    " does not match the data, whose samples have " + std::to_string(X.cols()) + " features");
    if (T.cols() != arch.outputs())
        throw Error("arch " + arch.to_string() + ": output width " + std::to_string(arch.outputs()) +
                    " does not match the data, whose targets have " + std::to_string(T.cols()) + " columns");
    if (T.rows() != X.rows())
        throw Error("data: X has " + std::to_string(X.rows()) + " rows but T has " + std::to_string(T.rows()));
    set_weight_decay(options.weight_decay);
    // the k of every mean: the rows of all ranks (collective: every rank constructs its Evaluation)
    m_k_global = m_comm->global_rows(X.rows());
    const Index L = arch.layers();
    m_A.resize(L);
    m_Z.resize(L - 1);
    m_delta.resize(L);
}

Evaluation::Evaluation(const Architecture& arch, const InputMatrix& X, const RowMatrix& T, const Vector& theta,
                       const EvaluationOptions& options)
    : Evaluation(arch, X, T, options) {
    reset(theta);
}

void Evaluation::set_weight_decay(double lambda) {
    if (!std::isfinite(lambda) || lambda < 0)
        throw Error("weight_decay: expected a finite number >= 0, found " + std::to_string(lambda));
    m_lambda = lambda;
    // E = L + lambda/2 |theta|^2; lambda = 0 leaves L's bits untouched
    m_loss = m_lambda > 0 ? m_data_loss + 0.5 * m_lambda * m_theta.squaredNorm() : m_data_loss;
    m_have_gradient = false;  // the cached gradient holds the old lambda theta
}

void Evaluation::reset(const Vector& theta) {
    if (theta.size() != m_arch.num_params())
        throw Error("theta: expected " + std::to_string(m_arch.num_params()) + " parameters for arch " +
                    m_arch.to_string() + ", found " + std::to_string(theta.size()));
    m_theta = theta;
    m_have_gradient = false;
    m_have_deltas = false;
    m_have_curvature = false;
    forward();
    // E = L + lambda/2 |theta|^2
    m_loss = m_lambda > 0 ? m_data_loss + 0.5 * m_lambda * m_theta.squaredNorm() : m_data_loss;
}

void Evaluation::reset(const Vector& theta, const Vector& gradient) {
    if (gradient.size() != m_arch.num_params())
        throw Error("gradient: expected " + std::to_string(m_arch.num_params()) + " entries, found " +
                    std::to_string(gradient.size()));
    reset(theta);
    m_grad = gradient;
    m_have_gradient = true;  // m_have_deltas stays false: the products run backward(false)
}

namespace {

Index argmax(const double* row, Index n) {
    Index best = 0;
    for (Index j = 1; j < n; ++j)
        if (row[j] > row[best]) best = j;
    return best;
}

/// Rows per task of the element-wise passes (their results do not depend on the split).
constexpr Index kRowTask = 64;

}  // namespace

// Small problems (mini-batches, tests) run on one thread: OpenMP fork/join and Eigen's parallel
// GEMM, whose threads spin-wait for each other, cost more than they save there, and on a
// shared machine a descheduled partner turns each spin into lost time slices (measured with
// k = 2000, 40-30-5 under load: 600 steps took 66 s on 2 threads, 0.36 s on one).
// omp_set_num_threads changes only the calling thread's ICV; Eigen reads it via
// omp_get_max_threads() (tdyn never calls Eigen::setNbThreads).
Evaluation::SerialIfSmall::SerialIfSmall(const Evaluation& e) {
#ifdef _OPENMP
    constexpr double kSmallWork = 5e7;  // k P; 784-50-10 (P = 39760): k < 1258
    if (double(e.samples()) * double(e.num_params()) < kSmallWork && omp_get_max_threads() > 1 && !omp_in_parallel()) {
        m_saved = omp_get_max_threads();
        omp_set_num_threads(1);
    }
#else
    (void)e;
#endif
}

Evaluation::SerialIfSmall::~SerialIfSmall() {
#ifdef _OPENMP
    if (m_saved > 0) omp_set_num_threads(m_saved);
#endif
}

void Evaluation::derivative_rows(const RowMatrix& A, const RowMatrix& Z, RowMatrix& D1, RowMatrix* D2) const {
    const Index k = A.rows();
    resize_huge(D1, A.rows(), A.cols());
    with_activation(m_arch.hidden, [&](auto policy) {
        using F = decltype(policy);
#pragma omp parallel for schedule(static) if (A.size() >= kParallelElems)
        for (Index r0 = 0; r0 < k; r0 += kRowTask) {
            const Index nr = std::min(kRowTask, k - r0);
            const auto a = A.middleRows(r0, nr).array();
            const auto z = Z.middleRows(r0, nr).array();
            // D2 .*= f''(A) (D2 holds dL/dZ on entry), D1 = f'(A)
            if (D2) D2->middleRows(r0, nr).array() *= F::d2(a, z);
            D1.middleRows(r0, nr).array() = F::d1(a, z);
        }
    });
}

void Evaluation::chunked_at_b(const Eigen::Ref<const RowMatrix>& A, const Eigen::Ref<const RowMatrix>& B,
                              Eigen::Ref<RowMatrix> out) const {
    const Index k = A.rows(), T = row_chunks(k);
    assert(B.rows() == k && out.rows() == A.cols() && out.cols() == B.cols());
    // out = acc_0 + acc_1 + ... in chunk order, acc_t = A[r0:r1]^T B[r0:r1], all T at once
    detail::sum_chunks_in_order(
        T, T, m_acc,
        [&](Index t, RowMatrix& a) {
            const Index r0 = chunk_begin(k, t, T), r1 = chunk_begin(k, t + 1, T);
            a.noalias() = A.middleRows(r0, r1 - r0).transpose() * B.middleRows(r0, r1 - r0);
        },
        out);
}

template <class S>
void Evaluation::chunked_colsum(const Eigen::Ref<const RowMatrixT<S>>& B, double* out) const {
    const Index k = B.rows(), n = B.cols(), T = row_chunks(k);
    if (Index(m_acc.size()) < T) m_acc.resize(T);
#pragma omp parallel for schedule(static) if (T > 1)
    for (Index t = 0; t < T; ++t) {
        const Index r0 = chunk_begin(k, t, T), r1 = chunk_begin(k, t + 1, T);
        // acc_t = 1^T B[r0:r1], in double
        RowMatrix& a = m_acc[t];
        a.setZero(1, n);
        for (Index i = r0; i < r1; ++i) a.row(0) += B.row(i).template cast<double>();
    }
    Eigen::Map<Eigen::RowVectorXd> o(out, n);
    o = m_acc[0].row(0);
    for (Index t = 1; t < T; ++t) o += m_acc[t].row(0);
}

template void Evaluation::chunked_colsum<double>(const Eigen::Ref<const RowMatrix>&, double*) const;
template void Evaluation::chunked_colsum<float>(const Eigen::Ref<const RowMatrixF>&, double*) const;

void Evaluation::forward() {
    const SerialIfSmall serial(*this);
    const Index L = m_arch.layers(), k = samples(), c = m_arch.outputs();
    // A_1 = X W_1  (b_1 is added below, in the pass that applies f)
    resize_huge(m_A[0], k, m_arch.widths[1]);
    if (m_X.precision() == Precision::F64) m_X.product<double>(weight(m_arch, m_theta, 1), m_A[0]);
    else m_X.times(weight(m_arch, m_theta, 1), m_A[0]);
    for (Index l = 2; l <= L; ++l) {
        // A_{l-1} += b_{l-1};  Z_{l-1} = f(A_{l-1});  A_l = Z_{l-1} W_l  (+ b_l in the next pass)
        RowMatrix& A = m_A[l - 2];
        RowMatrix& Z = m_Z[l - 2];
        resize_huge(Z, A.rows(), A.cols());
        const auto b = bias(m_arch, m_theta, l - 1).transpose();
        with_activation(m_arch.hidden, [&](auto policy) {
            using F = decltype(policy);
#pragma omp parallel for schedule(static) if (A.size() >= kParallelElems)
            for (Index r0 = 0; r0 < k; r0 += kRowTask) {
                const Index nr = std::min(kRowTask, k - r0);
                A.middleRows(r0, nr).rowwise() += b;
                Z.middleRows(r0, nr).array() = F::f(A.middleRows(r0, nr).array());
            }
        });
        resize_huge(m_A[l - 1], k, m_arch.widths[l]);
        rows_product(Z, weight(m_arch, m_theta, l), m_A[l - 1]);
    }
    // A_L += b_L;  Y = g(A_L) and the per-sample loss; softmax uses log y = a - logsumexp(a).
    RowMatrix& AL = m_A[L - 1];
    const double* bL = bias(m_arch, m_theta, L).data();
    resize_huge(m_Y, k, c);
    // Per-sample losses summed serially afterwards: an OpenMP float reduction combines partial
    // sums in thread-arrival order, and resume/replay promise bit-identical series.
    m_sample_loss.resize(k);
    const double* T = m_T.data();
    const Index t_stride = m_T.outerStride();
    const Index correct = with_loss(m_arch.output, [&](auto policy) {
        using Loss = decltype(policy);
        Index count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count) if (AL.size() >= kParallelElems)
        for (Index i = 0; i < k; ++i) {
            double* a = AL.data() + i * c;
            for (Index j = 0; j < c; ++j) a[j] += bL[j];
            const double* t = T + i * t_stride;
            double* y = m_Y.data() + i * c;
            // y = g(a), l_i = l(a, t)
            m_sample_loss[i] = Loss::forward(a, t, y, c);
            // c = 1 (a single output): correct when |y - t| < 0.5, i.e. rounding y gives t.
            const bool ok = c == 1 ? std::abs(y[0] - t[0]) < 0.5 : argmax(y, c) == argmax(t, c);
            count += ok ? 1 : 0;
        }
        return count;
    });
    // The sample sums of this rank, then the one reduction over ranks; means over the global k.
    // L = (1/k) sum_i l_i,  accuracy = (correct rows) / k
    double sums[2] = {m_sample_loss.sum(), double(correct)};
    m_comm->sum(sums, 2);
    m_data_loss = sums[0] / double(m_k_global);
    m_accuracy = sums[1] / double(m_k_global);
}

void Evaluation::backward(bool with_gradient) {
    const SerialIfSmall serial(*this);
    const Index L = m_arch.layers(), k = samples(), c = m_arch.outputs();
    // delta_L = dL/dA_L, one row per sample (loss.hpp):
    //   softmax-ce:  (y sum_j t_j - t) / k        (= (Y - T)/k for one-hot targets)
    //   sigmoid-mse: (y - t) y (1 - y) / k
    //   identity-mse: (y - t) / k
    RowMatrix& dL = m_delta[L - 1];
    resize_huge(dL, k, c);
    const double inv_k = 1.0 / double(m_k_global);  // the global k: delta_L carries the mean's 1/k
    const double* T = m_T.data();
    const Index t_stride = m_T.outerStride();
    with_loss(m_arch.output, [&](auto policy) {
        using Loss = decltype(policy);
#pragma omp parallel for schedule(static) if (dL.size() >= kParallelElems)
        for (Index i = 0; i < k; ++i) Loss::delta(m_Y.data() + i * c, T + i * t_stride, inv_k, dL.data() + i * c, c);
    });
    m_grad.resize(num_params());
    for (Index l = L; l >= 1; --l) {
        const RowMatrix& delta = m_delta[l - 1];
        if (with_gradient) {
            RowMap gW(m_grad.data() + m_arch.weight_offset(l), m_arch.widths[l - 1], m_arch.widths[l]);
            // dL/dW_l = Z_{l-1}^T delta_l  (Z_0 = X), as fixed-order sums over row chunks
            if (l == 1) {
                if (m_X.precision() == Precision::F64) {
                    m_X.transpose_product<double>(delta, gW);
                } else {
                    m_X.transpose_times(delta, m_XtR_64);
                    gW = m_XtR_64;
                }
            } else {
                chunked_at_b(m_Z[l - 2], delta, gW);
            }
            // dL/db_l = column sums of delta_l
            chunked_colsum<double>(delta, m_grad.data() + m_arch.bias_offset(l));
        }
        if (l > 1) {
            // delta_{l-1} = (delta_l W_l^T) .* f'(A_{l-1})
            RowMatrix& prev = m_delta[l - 2];
            resize_huge(prev, k, m_arch.widths[l - 1]);
            rows_product(delta, weight(m_arch, m_theta, l).transpose(), prev);
            const RowMatrix& A = m_A[l - 2];
            const RowMatrix& Z = m_Z[l - 2];
            with_activation(m_arch.hidden, [&](auto policy) {
                using F = decltype(policy);
#pragma omp parallel for schedule(static) if (A.size() >= kParallelElems)
                for (Index r0 = 0; r0 < k; r0 += kRowTask) {
                    const Index nr = std::min(kRowTask, k - r0);
                    times_d1<F>(A.middleRows(r0, nr).array(), Z.middleRows(r0, nr).array(),
                                prev.middleRows(r0, nr).array());
                }
            });
        }
    }
    m_have_deltas = true;
    if (!with_gradient) return;  // every rank takes the same branch: the reduction stays collective
    // This rank's sums over its samples, then the one reduction over ranks for the whole vector.
    m_comm->sum(m_grad.data(), m_grad.size());
    // grad E = grad L + lambda theta
    if (m_lambda > 0) m_grad.noalias() += m_lambda * m_theta;
    m_have_gradient = true;
}

const Vector& Evaluation::gradient() {
    if (!m_have_gradient) backward();
    return m_grad;
}

RowMatrix Evaluation::input_gradient() {
    if (!m_have_deltas) backward(!m_have_gradient);  // delta_1 (and the gradient unless it is known)
    // dL/dX = delta_1 W_1^T
    RowMatrix dX(samples(), m_arch.inputs());
    rows_product(m_delta[0], weight(m_arch, m_theta, 1).transpose(), dX);
    return dX;
}

RowMatrix Evaluation::output_derivative(Index i) const {
    const Index c = m_arch.outputs();
    RowMatrix D(c, c);
    // dy/dA_L of sample i (loss.hpp)
    with_loss(m_arch.output, [&](auto policy) { decltype(policy)::output_derivative(m_Y.row(i), D); });
    return D;
}

RowMatrix Evaluation::output_jacobian_reverse(Index i) const {
    const Index L = m_arch.layers();
    RowMatrix G = output_derivative(i);  // c x n_L
    for (Index l = L; l >= 2; --l) {
        // G_{l-1} = (G_l W_l^T) diag f'(A_{l-1})
        RowMatrix Gp = G * weight(m_arch, m_theta, l).transpose();
        for (Index j = 0; j < Gp.cols(); ++j) Gp.col(j) *= activate_d1(m_arch.hidden, m_A[l - 2](i, j));
        G = std::move(Gp);
    }
    return G * weight(m_arch, m_theta, 1).transpose();
}

RowMatrix Evaluation::output_jacobian_forward(Index i) const {
    const Index L = m_arch.layers();
    RowMatrix Tl = weight(m_arch, m_theta, 1).transpose();  // dA_1/dx, n_1 x d
    for (Index l = 2; l <= L; ++l) {
        // dA_l/dx = W_l^T diag f'(A_{l-1}) dA_{l-1}/dx
        for (Index j = 0; j < Tl.rows(); ++j) Tl.row(j) *= activate_d1(m_arch.hidden, m_A[l - 2](i, j));
        Tl = weight(m_arch, m_theta, l).transpose() * Tl;
    }
    return output_derivative(i) * Tl;
}

}  // namespace tdyn
