#include "tdyn/h5.hpp"

#include <cstring>
#include <filesystem>

namespace tdyn::h5 {

namespace {

/// HDF5 prints its error stack to stderr by default; tdyn reports one line instead.
void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string parent_of(const std::string& name) {
    const auto slash = name.find_last_of('/');
    return slash == std::string::npos || slash == 0 ? std::string("/") : name.substr(0, slash);
}

std::string dims_text(const std::vector<hsize_t>& dims) {
    std::string s = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
    return s + "]";
}

Handle dataspace(const std::vector<hsize_t>& dims) {
    return Handle(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr));
}

std::vector<hsize_t> extent(hid_t space) {
    const int n = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(n > 0 ? n : 0);
    if (n > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    return dims;
}

}  // namespace

Handle& Handle::operator=(Handle&& o) noexcept {
    if (this != &o) {
        close();
        m_id = o.m_id;
        o.m_id = H5I_INVALID_HID;
    }
    return *this;
}

void Handle::close() noexcept {
    if (m_id < 0) return;
    switch (H5Iget_type(m_id)) {
        case H5I_FILE: H5Fclose(m_id); break;
        case H5I_GROUP: H5Gclose(m_id); break;
        case H5I_DATASET: H5Dclose(m_id); break;
        case H5I_DATASPACE: H5Sclose(m_id); break;
        case H5I_DATATYPE: H5Tclose(m_id); break;
        case H5I_ATTR: H5Aclose(m_id); break;
        case H5I_GENPROP_LST: H5Pclose(m_id); break;
        default: break;
    }
    m_id = H5I_INVALID_HID;
}

void File::fail(const std::string& object, const std::string& what) const {
    throw Error(m_path + ": " + (object.empty() ? "" : object + ": ") + what);
}

File File::create(const std::string& path) {
    silence_hdf5();
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
    H5Pset_libver_bounds(fapl.id(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) throw Error(path + ": file exists");
    Handle f(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.id()));
    if (!f) throw Error(path + ": cannot create the file (check the directory exists and is writable)");
    return File(std::move(f), path, false);
}

File File::open_read(const std::string& path, bool swmr) {
    silence_hdf5();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": no such file");
    if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path + ": not an HDF5 file");
    Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY | (swmr ? H5F_ACC_SWMR_READ : 0u), H5P_DEFAULT));
    if (!f) throw Error(path + ": cannot open the HDF5 file for reading" + (swmr ? " (SWMR)" : ""));
    return File(std::move(f), path, swmr);
}

File File::open_write(const std::string& path) {
    silence_hdf5();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": no such file");
    if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path + ": not an HDF5 file");
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
    H5Pset_libver_bounds(fapl.id(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    // A writer killed in SWMR mode leaves the file marked "open for writing"; this is what
    // the h5clear tool sets to lift that mark (a registered file-access property).
    hbool_t clear = true;
    H5Pset(fapl.id(), "clear_status_flags", &clear);
    Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.id()));
    if (!f) throw Error(path + ": cannot open the HDF5 file for writing");
    return File(std::move(f), path, false);
}

void File::start_swmr() {
    if (H5Fstart_swmr_write(m_file.id()) < 0) fail("", "cannot start SWMR writing");
}

void File::flush() {
    if (H5Fflush(m_file.id(), H5F_SCOPE_GLOBAL) < 0) fail("", "cannot flush to disk (disk full?)");
}

bool File::exists(const std::string& object) const {
    if (object == "/" || object.empty()) return true;
    std::size_t pos = 0;
    while (true) {
        pos = object.find('/', pos + 1);
        const std::string prefix = object.substr(0, pos);
        if (!prefix.empty() && prefix != "/" && H5Lexists(m_file.id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
        if (pos == std::string::npos) return true;
    }
}

void File::ensure_group(const std::string& group) {
    if (exists(group)) return;
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE));
    H5Pset_create_intermediate_group(lcpl.id(), 1);
    Handle g(H5Gcreate2(m_file.id(), group.c_str(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT));
    if (!g) fail(group, "cannot create group");
}

Handle File::open_dataset(const std::string& name) const {
    if (!exists(name)) fail(name, "no such dataset");
    Handle d(H5Dopen2(m_file.id(), name.c_str(), H5P_DEFAULT));
    if (!d) fail(name, "cannot open dataset");
    if (m_swmr_read) H5Drefresh(d.id());  // see what a SWMR writer appended since
    return d;
}

Handle File::open_object(const std::string& obj) const {
    if (!exists(obj)) fail(obj, "no such object");
    Handle o(H5Oopen(m_file.id(), obj.c_str(), H5P_DEFAULT));
    if (!o) fail(obj, "cannot open object");
    return o;
}

void File::write_array(const std::string& name, hid_t mem_type, hid_t file_type, const std::vector<hsize_t>& dims,
                       const void* data) {
    if (exists(name)) fail(name, "dataset exists");
    ensure_group(parent_of(name));
    Handle space = dataspace(dims);
    Handle d(H5Dcreate2(m_file.id(), name.c_str(), file_type, space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (!d) fail(name, "cannot create dataset");
    if (H5Dwrite(d.id(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) fail(name, "cannot write");
}

void File::write_vector(const std::string& name, const Vector& v) {
    write_array(name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {hsize_t(v.size())}, v.data());
}

void File::write_matrix(const std::string& name, const RowMatrix& m) {
    write_array(name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {hsize_t(m.rows()), hsize_t(m.cols())}, m.data());
}

void File::write_ints(const std::string& name, const std::vector<std::int64_t>& v) {
    write_array(name, H5T_NATIVE_INT64, H5T_STD_I64LE, {hsize_t(v.size())}, v.data());
}

void File::write_scalar(const std::string& name, double x) {
    write_array(name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {}, &x);
}

std::vector<hsize_t> File::shape(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle s(H5Dget_space(d.id()));
    return extent(s.id());
}

File::Type File::type_class(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle t(H5Dget_type(d.id()));
    const H5T_class_t c = H5Tget_class(t.id());
    return c == H5T_FLOAT ? Type::Float : c == H5T_INTEGER ? Type::Integer : Type::Other;
}

std::size_t File::type_size(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle t(H5Dget_type(d.id()));
    return H5Tget_size(t.id());
}

namespace {
void check_numeric(const File& f, const std::string& name, File::Type t) {
    if (t == File::Type::Other) throw Error(f.path() + ": " + name + ": expected numbers, found another type");
}
}  // namespace

Vector File::read_vector(const std::string& name) const {
    const auto dims = shape(name);
    if (dims.size() != 1) fail(name, "expected a 1-d dataset, found " + std::to_string(dims.size()) + "-d " + dims_text(dims));
    check_numeric(*this, name, type_class(name));
    Vector v(static_cast<Index>(dims[0]));
    Handle d = open_dataset(name);
    if (dims[0] > 0 && H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0) fail(name, "cannot read");
    return v;
}

RowMatrix File::read_matrix(const std::string& name) const {
    const auto dims = shape(name);
    if (dims.size() != 2) fail(name, "expected a 2-d dataset, found " + std::to_string(dims.size()) + "-d " + dims_text(dims));
    check_numeric(*this, name, type_class(name));
    RowMatrix m(static_cast<Index>(dims[0]), static_cast<Index>(dims[1]));
    Handle d = open_dataset(name);
    if (m.size() > 0 && H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, m.data()) < 0) fail(name, "cannot read");
    return m;
}

double File::read_scalar(const std::string& name) const {
    const auto dims = shape(name);
    if (!(dims.empty() || (dims.size() == 1 && dims[0] == 1))) fail(name, "expected a scalar, found " + dims_text(dims));
    check_numeric(*this, name, type_class(name));
    double x = 0;
    Handle d = open_dataset(name);
    if (H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &x) < 0) fail(name, "cannot read");
    return x;
}

std::vector<std::int64_t> File::read_ints(const std::string& name) const {
    const auto dims = shape(name);
    if (dims.size() != 1) fail(name, "expected a 1-d dataset, found " + std::to_string(dims.size()) + "-d " + dims_text(dims));
    if (type_class(name) != Type::Integer) fail(name, "expected integers");
    std::vector<std::int64_t> v(dims[0]);
    Handle d = open_dataset(name);
    if (!v.empty() && H5Dread(d.id(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0) fail(name, "cannot read");
    return v;
}

std::vector<std::uint8_t> File::read_u8(const std::string& name, std::vector<hsize_t>& dims) const {
    dims = shape(name);
    Handle d = open_dataset(name);
    Handle t(H5Dget_type(d.id()));
    if (H5Tget_class(t.id()) != H5T_INTEGER || H5Tget_size(t.id()) != 1 || H5Tget_sign(t.id()) != H5T_SGN_NONE)
        fail(name, "expected uint8 values");
    std::size_t n = 1;
    for (auto x : dims) n *= x;
    std::vector<std::uint8_t> v(n);
    if (n > 0 && H5Dread(d.id(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0) fail(name, "cannot read");
    return v;
}

RowMatrix File::read_rows(const std::string& name, hsize_t first, hsize_t count) const {
    Handle d = open_dataset(name);
    Handle fs(H5Dget_space(d.id()));
    auto dims = extent(fs.id());
    if (dims.empty() || dims.size() > 2) fail(name, "expected a 1-d or 2-d dataset, found " + dims_text(dims));
    if (first + count > dims[0])
        fail(name, "rows " + std::to_string(first) + ".." + std::to_string(first + count) + " requested, dataset has " +
                       std::to_string(dims[0]));
    const hsize_t width = dims.size() == 2 ? dims[1] : 1;
    std::vector<hsize_t> start(dims.size(), 0), cnt = dims;
    start[0] = first;
    cnt[0] = count;
    H5Sselect_hyperslab(fs.id(), H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr);
    Handle ms = dataspace(cnt);
    RowMatrix m(static_cast<Index>(count), static_cast<Index>(width));
    if (count > 0 && H5Dread(d.id(), H5T_NATIVE_DOUBLE, ms.id(), fs.id(), H5P_DEFAULT, m.data()) < 0) fail(name, "cannot read");
    return m;
}

Vector File::read_row(const std::string& name, hsize_t row) const {
    const RowMatrix m = read_rows(name, row, 1);
    return m.row(0).transpose();
}

// ---------------------------------------------------------------------------------------------
// Attributes

Handle File::open_attr(const std::string& obj, const std::string& name) const {
    Handle o = open_object(obj);
    if (H5Aexists(o.id(), name.c_str()) <= 0) fail(obj, "no attribute '" + name + "'");
    Handle a(H5Aopen(o.id(), name.c_str(), H5P_DEFAULT));
    if (!a) fail(obj, "cannot open attribute '" + name + "'");
    return a;
}

bool File::has_attr(const std::string& obj, const std::string& name) const {
    if (!exists(obj)) return false;
    Handle o = open_object(obj);
    return H5Aexists(o.id(), name.c_str()) > 0;
}

void File::write_attr(const std::string& obj, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                      const void* data) {
    Handle o = open_object(obj);
    if (H5Aexists(o.id(), name.c_str()) > 0 && H5Adelete(o.id(), name.c_str()) < 0)
        fail(obj, "cannot replace attribute '" + name + "'");
    Handle space = dataspace(dims);
    Handle a(H5Acreate2(o.id(), name.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT));
    if (!a) fail(obj, "cannot create attribute '" + name + "'");
    if (H5Awrite(a.id(), type, data) < 0) fail(obj, "cannot write attribute '" + name + "'");
}

void File::set_attr(const std::string& obj, const std::string& name, const std::string& value) {
    // Variable-length UTF-8, as h5py writes str attributes.
    Handle t(H5Tcopy(H5T_C_S1));
    H5Tset_size(t.id(), H5T_VARIABLE);
    H5Tset_cset(t.id(), H5T_CSET_UTF8);
    const char* p = value.c_str();
    write_attr(obj, name, t.id(), {}, &p);
}

void File::set_attr(const std::string& obj, const std::string& name, double value) {
    write_attr(obj, name, H5T_NATIVE_DOUBLE, {}, &value);
}

void File::set_attr(const std::string& obj, const std::string& name, std::int64_t value) {
    write_attr(obj, name, H5T_NATIVE_INT64, {}, &value);
}

void File::set_attr(const std::string& obj, const std::string& name, const std::vector<std::int64_t>& value) {
    write_attr(obj, name, H5T_NATIVE_INT64, {hsize_t(value.size())}, value.data());
}

void File::set_attr(const std::string& obj, const std::string& name, const std::vector<double>& value) {
    write_attr(obj, name, H5T_NATIVE_DOUBLE, {hsize_t(value.size())}, value.data());
}

std::string File::attr_string(const std::string& obj, const std::string& name) const {
    Handle a = open_attr(obj, name);
    Handle t(H5Aget_type(a.id()));
    if (H5Tget_class(t.id()) != H5T_STRING) fail(obj, "attribute '" + name + "' is not a string");
    Handle s(H5Aget_space(a.id()));
    if (H5Sget_simple_extent_npoints(s.id()) != 1) fail(obj, "attribute '" + name + "' is not a single string");
    if (H5Tis_variable_str(t.id()) > 0) {
        Handle mt(H5Tcopy(H5T_C_S1));
        H5Tset_size(mt.id(), H5T_VARIABLE);
        H5Tset_cset(mt.id(), H5Tget_cset(t.id()));
        char* p = nullptr;
        if (H5Aread(a.id(), mt.id(), &p) < 0) fail(obj, "cannot read attribute '" + name + "'");
        std::string v = p ? p : "";
        H5free_memory(p);
        return v;
    }
    const std::size_t n = H5Tget_size(t.id());
    std::string v(n, '\0');
    if (H5Aread(a.id(), t.id(), v.data()) < 0) fail(obj, "cannot read attribute '" + name + "'");
    v.resize(std::strlen(v.c_str()));  // fixed-length strings are null-padded
    return v;
}

namespace {
template <class T>
std::vector<T> read_attr_array(const File& f, hid_t a, hid_t mem_type, const std::string& obj, const std::string& name) {
    Handle t(H5Aget_type(a));
    const H5T_class_t c = H5Tget_class(t.id());
    if (c != H5T_INTEGER && c != H5T_FLOAT) throw Error(f.path() + ": " + obj + ": attribute '" + name + "' is not numeric");
    Handle s(H5Aget_space(a));
    std::vector<T> v(std::size_t(H5Sget_simple_extent_npoints(s.id())));
    if (!v.empty() && H5Aread(a, mem_type, v.data()) < 0)
        throw Error(f.path() + ": " + obj + ": cannot read attribute '" + name + "'");
    return v;
}
}  // namespace

std::vector<std::int64_t> File::attr_ints(const std::string& obj, const std::string& name) const {
    Handle a = open_attr(obj, name);
    return read_attr_array<std::int64_t>(*this, a.id(), H5T_NATIVE_INT64, obj, name);
}

std::vector<double> File::attr_doubles(const std::string& obj, const std::string& name) const {
    Handle a = open_attr(obj, name);
    return read_attr_array<double>(*this, a.id(), H5T_NATIVE_DOUBLE, obj, name);
}

std::int64_t File::attr_int(const std::string& obj, const std::string& name) const {
    const auto v = attr_ints(obj, name);
    if (v.size() != 1) fail(obj, "attribute '" + name + "' should hold one number, holds " + std::to_string(v.size()));
    return v[0];
}

double File::attr_double(const std::string& obj, const std::string& name) const {
    const auto v = attr_doubles(obj, name);
    if (v.size() != 1) fail(obj, "attribute '" + name + "' should hold one number, holds " + std::to_string(v.size()));
    return v[0];
}

// ---------------------------------------------------------------------------------------------
// Series

namespace {
Handle create_chunked(hid_t file, const std::string& name, hid_t type, hsize_t width, hsize_t chunk_rows) {
    const bool matrix = width > 0;
    // Chunks of about 1 MiB at most: one row of a 39760-wide theta is one chunk.
    chunk_rows = std::max<hsize_t>(1, std::min<hsize_t>(chunk_rows, 131072 / std::max<hsize_t>(width, 1)));
    std::vector<hsize_t> dims = matrix ? std::vector<hsize_t>{0, width} : std::vector<hsize_t>{0};
    std::vector<hsize_t> maxdims = matrix ? std::vector<hsize_t>{H5S_UNLIMITED, width} : std::vector<hsize_t>{H5S_UNLIMITED};
    std::vector<hsize_t> chunk = matrix ? std::vector<hsize_t>{chunk_rows, width} : std::vector<hsize_t>{chunk_rows};
    Handle space(H5Screate_simple(int(dims.size()), dims.data(), maxdims.data()));
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(dcpl.id(), int(chunk.size()), chunk.data());
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE));
    H5Pset_create_intermediate_group(lcpl.id(), 1);
    return Handle(H5Dcreate2(file, name.c_str(), type, space.id(), lcpl.id(), dcpl.id(), H5P_DEFAULT));
}
}  // namespace

void File::create_series(const std::string& name, hsize_t width, hsize_t chunk_rows) {
    if (exists(name)) fail(name, "dataset exists");
    if (!create_chunked(m_file.id(), name, H5T_IEEE_F64LE, width, chunk_rows)) fail(name, "cannot create series");
}

void File::create_series_int(const std::string& name) {
    if (exists(name)) fail(name, "dataset exists");
    if (!create_chunked(m_file.id(), name, H5T_STD_I64LE, 0, 64)) fail(name, "cannot create series");
}

namespace {
void append_row(const File& f, hid_t d, const std::string& name, hid_t mem_type, const void* row, hsize_t width) {
    Handle fs(H5Dget_space(d));
    auto dims = extent(fs.id());
    const hsize_t w = dims.size() == 2 ? dims[1] : 1;
    if (w != width)
        throw Error(f.path() + ": " + name + ": appending a row of " + std::to_string(width) + " to rows of " + std::to_string(w));
    dims[0] += 1;
    if (H5Dset_extent(d, dims.data()) < 0) throw Error(f.path() + ": " + name + ": cannot grow the series");
    Handle grown(H5Dget_space(d));
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    start[0] = dims[0] - 1;
    count[0] = 1;
    H5Sselect_hyperslab(grown.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
    Handle ms = dataspace(count);
    if (H5Dwrite(d, mem_type, ms.id(), grown.id(), H5P_DEFAULT, row) < 0)
        throw Error(f.path() + ": " + name + ": cannot write (disk full?)");
}
}  // namespace

void File::append(const std::string& name, const double* row, hsize_t width) {
    Handle d = open_dataset(name);
    append_row(*this, d.id(), name, H5T_NATIVE_DOUBLE, row, width);
}

void File::append_int(const std::string& name, std::int64_t x) {
    Handle d = open_dataset(name);
    append_row(*this, d.id(), name, H5T_NATIVE_INT64, &x, 1);
}

hsize_t File::rows(const std::string& name) const {
    const auto dims = shape(name);
    if (dims.empty()) fail(name, "expected a series, found a scalar");
    return dims[0];
}

void File::truncate_rows(const std::string& name, hsize_t n) {
    Handle d = open_dataset(name);
    Handle fs(H5Dget_space(d.id()));
    auto dims = extent(fs.id());
    if (dims.empty() || n > dims[0]) fail(name, "cannot truncate to " + std::to_string(n) + " rows");
    dims[0] = n;
    if (H5Dset_extent(d.id(), dims.data()) < 0) fail(name, "cannot shrink the series");
}

void File::overwrite_row(const std::string& name, hsize_t row, const double* data, hsize_t width) {
    Handle d = open_dataset(name);
    Handle fs(H5Dget_space(d.id()));
    auto dims = extent(fs.id());
    const hsize_t w = dims.size() == 2 ? dims[1] : 1;
    if (dims.empty() || row >= dims[0] || w != width) fail(name, "cannot overwrite row " + std::to_string(row));
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    start[0] = row;
    count[0] = 1;
    H5Sselect_hyperslab(fs.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
    Handle ms = dataspace(count);
    if (H5Dwrite(d.id(), H5T_NATIVE_DOUBLE, ms.id(), fs.id(), H5P_DEFAULT, data) < 0) fail(name, "cannot write (disk full?)");
}

void File::overwrite(const std::string& name, const Vector& v) {
    const auto dims = shape(name);
    if (dims.size() != 1 || dims[0] != hsize_t(v.size()))
        fail(name, "cannot overwrite " + dims_text(dims) + " with " + std::to_string(v.size()) + " values");
    Handle d = open_dataset(name);
    if (H5Dwrite(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0) fail(name, "cannot write (disk full?)");
}

void File::remove(const std::string& name) {
    if (!exists(name)) fail(name, "no such object");
    if (H5Ldelete(m_file.id(), name.c_str(), H5P_DEFAULT) < 0) fail(name, "cannot delete");
}

}  // namespace tdyn::h5
