// Types and the one user-facing error type shared by every tdyn module.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <fmt/format.h>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tdyn {

using Scalar = double;
using Index = Eigen::Index;
using Vector = Eigen::VectorXd;
/// Column-major: blocks of vectors, P x M, one vector per column.
using Matrix = Eigen::MatrixXd;
/// Row-major: samples are rows (X is k x d), and the flat theta stores W_l row-major.
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Asks the kernel to back the whole 2 MB pages inside [p, p + bytes) with transparent huge
/// pages when they are first touched (madvise MADV_HUGEPAGE; Linux with THP "madvise" or
/// "always"). A first touch of a 4 KB page costs a page fault, and on virtual machines like
/// ours a fault costs microseconds: a one-shot `tdyn eval` of 60000 images spent 40 % of its
/// time in them (BENCHMARKS.md). Buffers under 4 MB, other systems and errors: nothing happens.
/// Call it before the buffer is first written; the numbers do not depend on it.
void advise_huge_pages(const void* p, std::size_t bytes);

/// m.resize(rows, cols) for a large buffer: huge pages are advised when the storage is new.
template <class M>
void resize_huge(M& m, Index rows, Index cols) {
    const void* before = m.data();
    m.resize(rows, cols);
    if (m.data() != before) advise_huge_pages(m.data(), sizeof(typename M::Scalar) * std::size_t(m.size()));
}

/// n zero bytes (or values) in a vector whose storage is advised before the zeros are written:
/// for a large buffer that a file read fills next.
template <class T>
std::vector<T> huge_vector(std::size_t n) {
    std::vector<T> v;
    v.reserve(n);
    advise_huge_pages(v.data(), n * sizeof(T));
    v.resize(n);
    return v;
}

/// std::allocator whose resize() leaves new elements default-initialised (uninitialised for
/// trivial types): for large buffers that the next pass overwrites whole (huge pages advised).
template <class T>
struct NoInitAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = NoInitAllocator<U>;
    };
    NoInitAllocator() = default;
    template <class U>
    NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        T* p = std::allocator<T>::allocate(n);
        advise_huge_pages(p, n * sizeof(T));
        return p;
    }
    template <class U>
    void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... A>
    void construct(U* p, A&&... a) {
        ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
    }
};

/// Invalid input from outside (files, flags, values). The message names the file or
/// flag, what was expected and what was found; the CLI prints it as one line.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A number in a message: the shortest text that reads back as the same double ("0.1",
/// "-1e-09"), never "-0.000000" as std::to_string gives.
inline std::string format_number(double x) { return fmt::format("{}", x); }

}  // namespace tdyn
