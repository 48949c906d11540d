// The one wrapper of the HDF5 C API: owning handles, every call checked in one place,
// errors that name the file and the object. Nothing else in tdyn calls H5*close.
#pragma once

#include "tdyn/common.hpp"

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tdyn::h5 {

/// Owns one HDF5 identifier (file, group, dataset, dataspace, datatype, attribute or
/// property list) and closes it by its type. Move-only; a moved-from handle is empty.
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
    void close() noexcept;  ///< never throws

private:
    hid_t m_id = H5I_INVALID_HID;
};

/// An open HDF5 file with the reads and writes tdyn's file formats need.
class File {
public:
    enum class Type { Float, Integer, Other };

    /// A new file; fails if it exists. Latest format, so SWMR writing is possible.
    static File create(const std::string& path);
    /// Read-only. With swmr, readers see a file while a writer appends to it.
    static File open_read(const std::string& path, bool swmr = false);
    /// Read-write (resume). Clears the "open for writing" mark a killed SWMR writer leaves.
    static File open_write(const std::string& path);

    const std::string& path() const { return m_path; }
    /// Starts SWMR writing: from here on no new objects or attributes, only appends.
    void start_swmr();
    void flush();

    bool exists(const std::string& object) const;
    void ensure_group(const std::string& group);

    // Whole datasets (created; fail if they exist).
    void write_vector(const std::string& name, const Vector& v);
    void write_matrix(const std::string& name, const RowMatrix& m);
    void write_ints(const std::string& name, const std::vector<std::int64_t>& v);
    void write_scalar(const std::string& name, double x);

    std::vector<hsize_t> shape(const std::string& name) const;
    Type type_class(const std::string& name) const;
    std::size_t type_size(const std::string& name) const;
    Vector read_vector(const std::string& name) const;     ///< rank 1, any numeric type
    RowMatrix read_matrix(const std::string& name) const;  ///< rank 2, any numeric type
    double read_scalar(const std::string& name) const;     ///< rank 0, or rank 1 of length 1
    std::vector<std::int64_t> read_ints(const std::string& name) const;  ///< rank 1 integer
    std::vector<std::uint8_t> read_u8(const std::string& name, std::vector<hsize_t>& dims) const;
    Vector read_row(const std::string& name, hsize_t row) const;  ///< one row (or element)
    RowMatrix read_rows(const std::string& name, hsize_t first, hsize_t count) const;

    // Attributes of an object ("/" for the root); set replaces an existing one.
    void set_attr(const std::string& obj, const std::string& name, const std::string& value);
    void set_attr(const std::string& obj, const std::string& name, double value);
    void set_attr(const std::string& obj, const std::string& name, std::int64_t value);
    void set_attr(const std::string& obj, const std::string& name, const std::vector<std::int64_t>& value);
    void set_attr(const std::string& obj, const std::string& name, const std::vector<double>& value);
    bool has_attr(const std::string& obj, const std::string& name) const;
    std::string attr_string(const std::string& obj, const std::string& name) const;
    double attr_double(const std::string& obj, const std::string& name) const;
    std::int64_t attr_int(const std::string& obj, const std::string& name) const;
    std::vector<std::int64_t> attr_ints(const std::string& obj, const std::string& name) const;
    std::vector<double> attr_doubles(const std::string& obj, const std::string& name) const;

    // Growable series: unlimited first axis, chunked. width 0: [n]; width w: [n x w].
    void create_series(const std::string& name, hsize_t width, hsize_t chunk_rows = 64);
    void create_series_int(const std::string& name);
    void append(const std::string& name, const double* row, hsize_t width);
    void append(const std::string& name, const Vector& row) { append(name, row.data(), hsize_t(row.size())); }
    void append_scalar(const std::string& name, double x) { append(name, &x, 1); }
    void append_int(const std::string& name, std::int64_t x);
    hsize_t rows(const std::string& name) const;
    void truncate_rows(const std::string& name, hsize_t n);
    void overwrite_row(const std::string& name, hsize_t row, const double* data, hsize_t width);
    void overwrite(const std::string& name, const Vector& v);  ///< same shape required

    void remove(const std::string& name);

private:
    File(Handle h, std::string path, bool swmr_read) : m_file(std::move(h)), m_path(std::move(path)), m_swmr_read(swmr_read) {}
    Handle open_dataset(const std::string& name) const;
    Handle open_object(const std::string& obj) const;
    Handle open_attr(const std::string& obj, const std::string& name) const;
    void write_array(const std::string& name, hid_t mem_type, hid_t file_type, const std::vector<hsize_t>& dims, const void* data);
    void write_attr(const std::string& obj, const std::string& name, hid_t type, const std::vector<hsize_t>& dims, const void* data);
    [[noreturn]] void fail(const std::string& object, const std::string& what) const;

    Handle m_file;
    std::string m_path;
    bool m_swmr_read = false;
};

}  // namespace tdyn::h5
