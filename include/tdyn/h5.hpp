// The one wrapper of the HDF5 C API: owning handles, every call checked in one place,
// errors that name the file and the object. Nothing else in tdyn calls H5*close.
#pragma once

#include "tdyn/common.hpp"

#include <hdf5.h>

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tdyn::h5 {

/// Owns one HDF5 identifier (file, group, dataset, dataspace, datatype, attribute or
/// property list) and closes it by its type, so no caller has to pick the right H5?close.
/// Move-only; a moved-from handle is empty. A negative id is an empty handle.
class Handle {
public:
    Handle() = default;
    explicit Handle(hid_t id) : m_id(id) {}
    Handle(Handle&& o) noexcept : m_id(o.m_id) { o.m_id = H5I_INVALID_HID; }
    Handle& operator=(Handle&& o) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { close(); }
    hid_t id() const { return m_id; }
    explicit operator bool() const { return m_id >= 0; }
    void close() noexcept;  ///< never throws: destructors run during unwinding

private:
    hid_t m_id = H5I_INVALID_HID;
};

/// An open HDF5 file with the reads and writes tdyn's file formats need. Object names
/// are absolute paths ("/trajectory/loss"); every failure throws tdyn::Error as one line
/// "FILE: OBJECT: what went wrong". Movable, not copyable; closing is automatic.
class File {
public:
    File() = default;  ///< no file (closed); assign an opened one to use it
    File(File&& o) noexcept = default;
    File& operator=(File&& o) noexcept;
    ~File() { keep_image(); }
    enum class Type { Float, Integer, Other };

    /// A new file; fails if it exists (never clobbers). Latest format, so SWMR is possible.
    static File create(const std::string& path);
    /// Read-only. With swmr, the file may be open by a SWMR writer; every dataset read
    /// and rows() refreshes the dataset first, so appended rows become visible.
    static File open_read(const std::string& path, bool swmr = false);
    /// Read-write (resume). Clears the "open for writing" mark a killed SWMR writer leaves.
    /// Waits up to wait_seconds while another program's lock (a reader) keeps it from opening.
    static File open_write(const std::string& path, double wait_seconds = 10);

    const std::string& path() const { return m_path; }
    /// Starts SWMR writing. Every dataset and attribute must exist before: from here on
    /// only appends, truncations and overwrites of existing datasets are allowed.
    void start_swmr();
    /// Makes everything written so far visible to readers (and survive a crash), then
    /// reserves disk space for the next writes (see reserve_space()).
    void flush();

    /// True if every link on the path exists (missing intermediate groups are fine).
    bool exists(const std::string& object) const;
    /// Creates the group and any missing parents; no-op if it exists.
    void ensure_group(const std::string& group);

    // Whole datasets, float64 or int64; created with missing parents, fail if they exist.
    void write(const std::string& name, const Vector& v);                     ///< [n]
    void write(const std::string& name, const RowMatrix& m);                  ///< [r x c]
    void write(const std::string& name, const std::vector<std::int64_t>& v);  ///< [n] int64
    void write_scalar(const std::string& name, double x);                     ///< rank 0
    /// Eigen expressions (Vector::Zero(n), m.transpose()) would match both Vector and
    /// RowMatrix ambiguously: column vectors at compile time are [n], the rest [r x c].
    template <class Derived>
    void write(const std::string& name, const Eigen::MatrixBase<Derived>& x) {
        if constexpr (Derived::ColsAtCompileTime == 1) write(name, Vector(x));
        else write(name, RowMatrix(x));
    }
    void write_vector(const std::string& name, const Vector& v) { write(name, v); }
    void write_matrix(const std::string& name, const RowMatrix& m) { write(name, m); }
    void write_ints(const std::string& name, const std::vector<std::int64_t>& v) { write(name, v); }

    std::vector<hsize_t> shape(const std::string& name) const;  ///< empty for a scalar
    Type type_class(const std::string& name) const;
    std::size_t type_size(const std::string& name) const;                ///< bytes per stored element
    Vector read_vector(const std::string& name) const;                   ///< rank 1, any numeric type
    RowMatrix read_matrix(const std::string& name) const;                ///< rank 2, any numeric type
    double read_scalar(const std::string& name) const;                   ///< rank 0, or rank 1 of length 1
    std::vector<std::int64_t> read_ints(const std::string& name) const;  ///< rank 1 integer
    /// Any rank, stored uint8 only (image data); dims receives the shape.
    std::vector<std::uint8_t> read_u8(const std::string& name, std::vector<hsize_t>& dims) const;
    /// One row of a 2-d dataset, or one element of a 1-d one as a length-1 vector.
    Vector read_row(const std::string& name, hsize_t row) const;
    /// Rows [first, first + count) of a 1-d (as count x 1) or 2-d dataset.
    RowMatrix read_rows(const std::string& name, hsize_t first, hsize_t count) const;
    /// The same rows of a stored uint8 dataset as bytes (row-major, count x columns).
    std::vector<std::uint8_t> read_rows_u8(const std::string& name, hsize_t first, hsize_t count) const;

    // Attributes of an object ("/" for the root). Setting replaces an existing one.
    // Strings are written variable-length UTF-8 (as h5py does); both kinds are read.
    void set_attr(const std::string& obj, const std::string& name, const std::string& value);
    void set_attr(const std::string& obj, const std::string& name, const char* value) {
        set_attr(obj, name, std::string(value));
    }
    void set_attr(const std::string& obj, const std::string& name, double value);
    void set_attr(const std::string& obj, const std::string& name, std::int64_t value);
    /// Any other integer (int, Index, size_t) is stored as int64, not ambiguously.
    template <std::integral T>
    void set_attr(const std::string& obj, const std::string& name, T value) {
        set_attr(obj, name, std::int64_t(value));
    }
    void set_attr(const std::string& obj, const std::string& name, const std::vector<std::int64_t>& value);
    void set_attr(const std::string& obj, const std::string& name, const std::vector<double>& value);
    bool has_attr(const std::string& obj, const std::string& name) const;
    std::string attr_string(const std::string& obj, const std::string& name) const;
    double attr_double(const std::string& obj, const std::string& name) const;                   ///< one number
    std::int64_t attr_int(const std::string& obj, const std::string& name) const;                ///< one integer
    std::vector<std::int64_t> attr_ints(const std::string& obj, const std::string& name) const;  ///< integers
    std::vector<double> attr_doubles(const std::string& obj, const std::string& name) const;     ///< any numbers

    // Growable series: unlimited first axis, chunked. width 0: [n]; width w: [n x w].
    /// Chunks hold chunk_rows rows but at most ~1 MiB (one row for a large theta).
    void create_series(const std::string& name, hsize_t width, hsize_t chunk_rows = 64);
    void create_series_int(const std::string& name);  ///< [n] int64
    /// Grows the first axis by one and writes the row; width must match (1 for [n]).
    void append(const std::string& name, const double* row, hsize_t width);
    void append(const std::string& name, const Vector& row) { append(name, row.data(), hsize_t(row.size())); }
    void append_scalar(const std::string& name, double x) { append(name, &x, 1); }
    void append_int(const std::string& name, std::int64_t x);
    hsize_t rows(const std::string& name) const;  ///< current first-axis length
    /// Shrinks the first axis to n rows (resume drops rows written after the checkpoint).
    void truncate_rows(const std::string& name, hsize_t n);
    void overwrite_row(const std::string& name, hsize_t row, const double* data, hsize_t width);
    void overwrite(const std::string& name, const Vector& v);  ///< rank 1, same length required

    void remove(const std::string& name);  ///< unlinks; the space is not reclaimed
    /// Names of the links directly inside a group (datasets and groups), sorted; none if absent.
    std::vector<std::string> children(const std::string& group) const;

private:
    /// Memory-only mode: a writable file's bytes are kept under its path when it closes.
    void keep_image() noexcept;
    File(Handle h, std::string path, bool swmr_read, bool writable)
        : m_file(std::move(h)), m_path(std::move(path)), m_swmr_read(swmr_read), m_writable(writable) {}
    Handle open_dataset(const std::string& name) const;
    Handle open_object(const std::string& obj) const;
    Handle open_attr(const std::string& obj, const std::string& name) const;
    std::vector<hsize_t> extent(hid_t space, const std::string& name) const;
    Handle select_rows(hid_t space, const std::string& name, hsize_t first, hsize_t count) const;
    void write_array(const std::string& name, hid_t mem_type, hid_t file_type, const std::vector<hsize_t>& dims,
                     const void* data);
    void write_attr(const std::string& obj, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                    const void* data);
    void append_row(const std::string& name, hid_t mem_type, const void* row, hsize_t width);
    /// The one check of a C return value: HDF5 reports failure as a negative id or status.
    std::int64_t check(std::int64_t ret, const std::string& object, std::string_view what) const;
    [[noreturn]] void fail(const std::string& object, std::string_view what) const;
    /// A full disk must not damage the file. HDF5 records the new end of file in the superblock
    /// before it writes the data there, so a write that fails with ENOSPC (or EFBIG) leaves a
    /// file it refuses as truncated. A writable file therefore keeps disk blocks allocated
    /// (fallocate) beyond HDF5's end of file: at least one chunk of every series, 1 MiB of
    /// metadata and `extra` bytes, so the writes until the next flush cannot run out of space.
    /// When the blocks cannot be had, this throws DiskFull before anything more is written:
    /// the file is as a kill at that point would leave it, and resumes. The spare blocks are
    /// given back when the file is closed (Handle::close).
    void reserve_space(std::uint64_t extra = 0);

    Handle m_file;
    std::string m_path;
    bool m_swmr_read = false;
    bool m_writable = false;
    int m_fd = -2;                     ///< the POSIX descriptor reserve_space() uses (-1: none, -2: not looked up)
    std::uint64_t m_series_bytes = 0;  ///< one chunk of every chunked dataset (reserve_space)
    bool m_series_changed = true;      ///< m_series_bytes must be recounted
    bool m_memory = false;             ///< held in memory (set_memory_only), not on disk
};

/// Memory-only mode, for the ranks of an MPI run other than rank 0 (ranks.hpp): they run the
/// same program as rank 0 but must not touch its output files. Files they create or open for
/// writing live in memory (HDF5's core driver, no backing store); a closed one is kept under
/// its path, so reopening it finds what was written. Files opened for reading come from
/// memory if held there (set_image), else from disk (inputs: data and params files).
void set_memory_only(bool on);
bool memory_only();
/// The bytes of the file at `path` as rank 0 read them from disk: this process opens them
/// instead of the disk file (memory-only mode).
void set_image(const std::string& path, std::string bytes);

/// The disk (or a file-size limit) has no room for the next writes; the file is intact.
class DiskFull : public Error {
public:
    using Error::Error;
};

}  // namespace tdyn::h5
