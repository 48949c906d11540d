#include "tdyn/h5.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

namespace tdyn::h5 {

namespace {

/// HDF5 prints its whole error stack to stderr by default; tdyn reports one line instead.
void silence_hdf5() {
    static const bool done = (H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr), true);
    (void)done;
}

/// The system-level reason HDF5 recorded for the call that just failed (a truncated file, a
/// write() that failed with errno ...), as " (HDF5: ...)", or "" when there is none: the
/// innermost entry of its error stack, whose printing silence_hdf5() turned off.
std::string io_cause() {
    std::string cause;
    H5Ewalk2(
        H5E_DEFAULT, H5E_WALK_UPWARD,
        [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
            auto& s = *static_cast<std::string*>(out);
            if (s.empty() && e->desc) {
                const std::string d = e->desc;
                if (d.find("truncated") != std::string::npos || d.find("errno") != std::string::npos) s = d;
            }
            return 0;
        },
        &cause);
    for (char& c : cause)
        if (c == '\n') c = ' ';
    return cause.empty() ? "" : " (HDF5: " + cause + ")";
}

/// "1-d [100]", "2-d [3 x 4]" or "a scalar", for messages.
std::string describe(const std::vector<hsize_t>& dims) {
    if (dims.empty()) return "a scalar";
    std::string s = std::to_string(dims.size()) + "-d [";
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
    return s + "]";
}

/// "float64", "uint8", "string", ..., for messages.
std::string type_text(hid_t t) {
    const std::string bits = std::to_string(8 * H5Tget_size(t));
    switch (H5Tget_class(t)) {
        case H5T_FLOAT: return "float" + bits;
        case H5T_INTEGER: return (H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int") + bits;
        case H5T_STRING: return "string";
        default: return "a non-numeric type";
    }
}

bool is_numeric(hid_t t) {
    const H5T_class_t c = H5Tget_class(t);
    return c == H5T_FLOAT || c == H5T_INTEGER;
}

std::size_t count_of(const std::vector<hsize_t>& dims) {
    std::size_t n = 1;
    for (auto d : dims) n *= d;
    return n;
}

/// The property list that makes H5Dcreate2/H5Gcreate2 create missing parent groups.
hid_t intermediate_groups() {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        Handle drop(lcpl);
        return H5I_INVALID_HID;
    }
    return lcpl;
}

/// Latest file format: required for SWMR and for the compact chunk indexes it uses.
/// No metadata or small-data aggregation: HDF5 carves small allocations (chunk-index blocks,
/// 512-byte chunks) out of 2 KiB blocks whose unused rest lives only as long as the open file;
/// a later step of the same session fills it, a close throws it away. A run cut short and
/// resumed would then grow at the end of the file where the uninterrupted run filled the rest,
/// and end larger. Without aggregation every allocation is exact (at the end of the file, or in
/// space freed in the same session), so a resumed run lays out its file as an uninterrupted one.
hid_t latest_format_fapl();

bool g_memory_only = false;
/// Memory-only mode: files rank 0 sent (their bytes), and files written here, kept open after
/// their File closed (an id from H5Freopen). HDF5 1.10's H5Fget_file_image of an open
/// latest-format file gives a superblock with a wrong checksum, so written files stay open.
struct Held {
    std::string bytes;
    Handle open;
};
std::map<std::string, Held>& held() {
    static std::map<std::string, Held> m;
    return m;
}

/// latest_format_fapl() on HDF5's core driver with no backing store, opening `image` if given.
hid_t memory_fapl(const std::string* image) {
    hid_t fapl = latest_format_fapl();
    // A killed writer's image carries its "open for writing" mark: lift it, as open_write does.
    hbool_t clear = true;
    if (fapl >= 0 && image) H5Pset(fapl, "clear_status_flags", &clear);
    if (fapl >= 0 && (H5Pset_fapl_core(fapl, 1 << 20, 0) < 0 ||
                      (image && H5Pset_file_image(fapl, const_cast<char*>(image->data()), image->size()) < 0))) {
        Handle drop(fapl);
        return H5I_INVALID_HID;
    }
    return fapl;
}

/// The name HDF5's core driver gets for the file at `path`: one that is on no disk (with a
/// file image, the core driver refuses a name that exists).
std::string memory_name(const std::string& path) { return "tdyn-memory:" + path; }

/// The file at `path` in memory: a new id of a held open file, or the sent bytes opened
/// read-write (this process's own copy; only then does HDF5 lift the mark). Empty if neither.
Handle open_held(const std::string& path) {
    const auto it = held().find(path);
    if (it == held().end()) return Handle();
    if (it->second.open) return Handle(H5Freopen(it->second.open.id()));
    Handle fapl(memory_fapl(&it->second.bytes));
    return Handle(fapl ? H5Fopen(memory_name(path).c_str(), H5F_ACC_RDWR, fapl.id()) : H5I_INVALID_HID);
}

}  // namespace

void set_memory_only(bool on) { g_memory_only = on; }
bool memory_only() { return g_memory_only; }
void set_image(const std::string& path, std::string bytes) { held()[path] = Held{std::move(bytes), Handle()}; }

namespace {

hid_t latest_format_fapl() {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && (H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0 ||
                      H5Pset_meta_block_size(fapl, 0) < 0 || H5Pset_small_data_block_size(fapl, 0) < 0)) {
        Handle drop(fapl);
        return H5I_INVALID_HID;
    }
    return fapl;
}

/// The POSIX descriptor of an open file (HDF5's default sec2 driver), or -1 for other drivers.
int descriptor(hid_t file) {
    hid_t driver = H5Pget_driver(Handle(H5Fget_access_plist(file)).id());
    void* handle = nullptr;
    if (driver != H5FD_SEC2 || H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || !handle) return -1;
    return *static_cast<int*>(handle);
}

/// HDF5's end of allocated space: every byte it has written or will write is below it (while
/// writing, the driver's own idea of the end of file never exceeds it).
std::uint64_t end_of_allocation(hid_t file) {
    hsize_t n = 0;
    return H5Fget_filesize(file, &n) < 0 ? 0 : n;
}

/// Gives back the disk blocks File::reserve_space() kept beyond HDF5's end of file. Flushes
/// first, so that space HDF5 allocates while flushing comes from the reserve, then cuts the
/// file to HDF5's end; the close that follows writes only in place.
void give_back_reserve(hid_t file) {
    unsigned intent = 0;
    if (H5Fget_intent(file, &intent) < 0 || !(intent & H5F_ACC_RDWR)) return;
    const int fd = descriptor(file);
    if (fd < 0 || H5Fflush(file, H5F_SCOPE_LOCAL) < 0) return;  // a failed flush keeps the reserve for the close
    struct stat st {};
    const std::uint64_t end = end_of_allocation(file);
    if (end > 0 && fstat(fd, &st) == 0 && std::uint64_t(st.st_size) > end) (void)!ftruncate(fd, off_t(end));
}

/// One chunk of every chunked dataset in the file: what the appends between two flushes can
/// allocate at most (each series crosses into at most one new chunk per step).
herr_t add_chunk_bytes(hid_t loc, const char* name, const H5L_info_t* link, void* out) {
    if (link->type != H5L_TYPE_HARD) return 0;
    H5O_info_t info;
    if (H5Oget_info_by_name2(loc, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_DATASET)
        return 0;
    Handle d(H5Dopen2(loc, name, H5P_DEFAULT));
    Handle dcpl(d ? H5Dget_create_plist(d.id()) : H5I_INVALID_HID), type(d ? H5Dget_type(d.id()) : H5I_INVALID_HID);
    if (!dcpl || !type || H5Pget_layout(dcpl.id()) != H5D_CHUNKED) return 0;
    hsize_t dims[H5S_MAX_RANK];
    const int rank = H5Pget_chunk(dcpl.id(), H5S_MAX_RANK, dims);
    std::uint64_t bytes = H5Tget_size(type.id());
    for (int i = 0; i < rank; ++i) bytes *= dims[i];
    *static_cast<std::uint64_t*>(out) += bytes;
    return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Handle

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
        case H5I_FILE:
            give_back_reserve(m_id);
            H5Fclose(m_id);
            break;
        case H5I_GROUP: H5Gclose(m_id); break;
        case H5I_DATASET: H5Dclose(m_id); break;
        case H5I_DATASPACE: H5Sclose(m_id); break;
        case H5I_DATATYPE: H5Tclose(m_id); break;
        case H5I_ATTR: H5Aclose(m_id); break;
        case H5I_GENPROP_LST: H5Pclose(m_id); break;
        default: break;  // already closed or not ours: nothing to do
    }
    m_id = H5I_INVALID_HID;
}

// ---------------------------------------------------------------------------------------------
// Errors, opening, closing

void File::fail(const std::string& object, std::string_view what) const {
    throw Error(m_path + ": " + (object.empty() ? "" : object + ": ") + std::string(what));
}

std::int64_t File::check(std::int64_t ret, const std::string& object, std::string_view what) const {
    if (ret < 0) fail(object, std::string(what) + io_cause());
    return ret;
}

File& File::operator=(File&& o) noexcept {
    if (this != &o) {
        keep_image();
        m_file = std::move(o.m_file);
        m_path = std::move(o.m_path);
        m_swmr_read = o.m_swmr_read;
        m_writable = o.m_writable;
        m_fd = o.m_fd;
        m_series_bytes = o.m_series_bytes;
        m_series_changed = o.m_series_changed;
        m_memory = o.m_memory;
    }
    return *this;
}

void File::keep_image() noexcept {
    if (!m_memory || !m_writable || !m_file) return;
    try {
        Handle again(H5Freopen(m_file.id()));  // keeps the file open when this File closes
        if (again) held()[m_path] = Held{std::string(), std::move(again)};
    } catch (...) {  // out of memory: the copy is lost, never the program
    }
}

File File::create(const std::string& path) {
    silence_hdf5();
    if (g_memory_only) {
        Handle fapl(memory_fapl(nullptr));
        Handle f(H5Fcreate(memory_name(path).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id()));
        if (!fapl || !f) throw Error(path + ": cannot create the file in memory");
        File file(std::move(f), path, false, true);
        file.m_memory = true;
        return file;
    }
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) throw Error(path + ": file exists");
    Handle fapl(latest_format_fapl());
    Handle f(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.id()));
    if (!fapl || !f) throw Error(path + ": cannot create the file (does the directory exist and is it writable?)");
    File file(std::move(f), path, false, true);
    file.reserve_space();
    return file;
}

File File::open_read(const std::string& path, bool swmr) {
    silence_hdf5();
    if (g_memory_only && held().count(path)) {
        Handle f = open_held(path);
        if (!f) throw Error(path + ": cannot open the HDF5 file (the copy rank 0 sent)" + io_cause());
        File file(std::move(f), path, false, false);
        file.m_memory = true;
        return file;
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": no such file");
    if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path + ": not an HDF5 file");
    Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY | (swmr ? H5F_ACC_SWMR_READ : 0u), H5P_DEFAULT));
    if (!f) {
        // A truncated file is the likely cause; say so rather than guess.
        if (const std::string cause = io_cause(); !cause.empty())
            throw Error(path + ": cannot open the HDF5 file, it is damaged" + cause);
        throw Error(path + (swmr ? ": cannot open the HDF5 file for SWMR reading (was it written with SWMR?)"
                                 : ": cannot open the HDF5 file for reading (is a writer still running? use SWMR)"));
    }
    return File(std::move(f), path, swmr, false);
}

File File::open_write(const std::string& path, double wait_seconds) {
    silence_hdf5();
    if (g_memory_only) {
        if (!held().count(path)) throw Error(path + ": no such file (rank 0 sent no copy)");
        Handle f = open_held(path);
        if (!f) throw Error(path + ": cannot open the HDF5 file for writing (the copy rank 0 sent)" + io_cause());
        File file(std::move(f), path, false, true);
        file.m_memory = true;
        return file;
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": no such file");
    if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path + ": not an HDF5 file");
    Handle fapl(latest_format_fapl());
    if (!fapl) throw Error(path + ": cannot set up file access");
    // A writer killed in SWMR mode leaves the file marked "open for writing"; this
    // registered file-access property is what the h5clear tool sets to lift the mark.
    hbool_t clear = true;
    H5Pset(fapl.id(), "clear_status_flags", &clear);  // best effort: absent in other versions
    // A reader (a notebook watching the run) holds a lock; it usually lets go within moments.
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.id()));
        if (f) {
            File file(std::move(f), path, false, true);
            file.reserve_space();
            return file;
        }
        const std::string cause = io_cause();
        const bool locked = cause.find("lock") != std::string::npos;
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (locked && waited < wait_seconds) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
        }
        if (locked)
            throw Error(path + ": cannot open the HDF5 file for writing: another program has it open (file lock)");
        if (!cause.empty()) throw Error(path + ": cannot open the HDF5 file, it is damaged" + cause);
        throw Error(path + ": cannot open the HDF5 file for writing (is another program writing it?)");
    }
}

void File::start_swmr() {
    if (m_memory) return;  // no readers to serve
    check(H5Fstart_swmr_write(m_file.id()), "", "cannot start SWMR writing");
}

void File::flush() {
    check(H5Fflush(m_file.id(), H5F_SCOPE_GLOBAL), "", "cannot flush to disk (disk full?)");
    reserve_space();
}

void File::reserve_space(std::uint64_t extra) {
    if (m_fd == -2) m_fd = m_writable ? descriptor(m_file.id()) : -1;
    const int fd = m_fd;
    if (fd < 0) return;
    if (m_series_changed) {
        m_series_bytes = 0;
        check(H5Lvisit(m_file.id(), H5_INDEX_NAME, H5_ITER_NATIVE, add_chunk_bytes, &m_series_bytes), "",
              "cannot list the datasets");
        m_series_changed = false;
    }
    const std::uint64_t margin = m_series_bytes + (std::uint64_t(1) << 20) + extra;  // + 1 MiB of metadata
    const std::uint64_t end = end_of_allocation(m_file.id());
    struct stat st {};
    if (end == 0 || (fstat(fd, &st) == 0 && std::uint64_t(st.st_size) >= end + margin)) return;
    // Twice the margin, so most flushes find enough and make no system call; the bare margin
    // is what must be had.
    int err = posix_fallocate(fd, off_t(end), off_t(2 * margin));
    if (err != 0 && err != EINVAL && err != EOPNOTSUPP) err = posix_fallocate(fd, off_t(end), off_t(margin));
    if (err == EINVAL || err == EOPNOTSUPP) return;  // a file system that cannot reserve: write as before
    if (err != 0)
        throw DiskFull(m_path + ": no room for the next writes (" + std::strerror(err) + ", " +
                       std::to_string((margin + (1 << 20) - 1) >> 20) +
                       " MiB needed); what was written so far is intact");
}

bool File::exists(const std::string& object) const {
    // H5Lexists on "/a/b" fails if "/a" is missing, so walk the path one link at a time.
    std::size_t pos = 0;
    while (pos != std::string::npos) {
        pos = object.find('/', pos + 1);
        const std::string prefix = object.substr(0, pos);
        if (prefix.empty() || prefix == "/") continue;
        if (H5Lexists(m_file.id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    return true;
}

void File::ensure_group(const std::string& group) {
    if (exists(group)) return;
    Handle lcpl(check(intermediate_groups(), group, "cannot create group"));
    Handle g(check(H5Gcreate2(m_file.id(), group.c_str(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT), group,
                   "cannot create group"));
}

Handle File::open_dataset(const std::string& name) const {
    // Open first and look for the reason only on failure: append() runs every step.
    Handle d(H5Dopen2(m_file.id(), name.c_str(), H5P_DEFAULT));
    if (!d) fail(name, exists(name) ? "cannot open dataset (is it a group?)" : "no such dataset");
    if (m_swmr_read) check(H5Drefresh(d.id()), name, "cannot refresh dataset (SWMR)");
    return d;
}

Handle File::open_object(const std::string& obj) const {
    Handle o(H5Oopen(m_file.id(), obj.c_str(), H5P_DEFAULT));
    if (!o) fail(obj, exists(obj) ? "cannot open object" : "no such object");
    return o;
}

std::vector<hsize_t> File::extent(hid_t space, const std::string& name) const {
    const int n = int(check(H5Sget_simple_extent_ndims(space), name, "cannot read the shape"));
    std::vector<hsize_t> dims(std::size_t(n), 0);
    if (n > 0) check(H5Sget_simple_extent_dims(space, dims.data(), nullptr), name, "cannot read the shape");
    return dims;
}

/// Selects rows [first, first + count) in the file space; returns the matching memory space.
Handle File::select_rows(hid_t space, const std::string& name, hsize_t first, hsize_t count) const {
    const auto dims = extent(space, name);
    std::vector<hsize_t> start(dims.size(), 0), cnt = dims;
    start[0] = first;
    cnt[0] = count;
    check(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr), name,
          "cannot select rows");
    return Handle(check(H5Screate_simple(int(cnt.size()), cnt.data(), nullptr), name, "cannot create a dataspace"));
}

// ---------------------------------------------------------------------------------------------
// Whole datasets

void File::write_array(const std::string& name, hid_t mem_type, hid_t file_type, const std::vector<hsize_t>& dims,
                       const void* data) {
    if (exists(name)) fail(name, "dataset exists");
    reserve_space(count_of(dims) * H5Tget_size(file_type));
    Handle space(check(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                       name, "cannot create a dataspace"));
    Handle lcpl(check(intermediate_groups(), name, "cannot create dataset"));
    Handle d(check(H5Dcreate2(m_file.id(), name.c_str(), file_type, space.id(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT),
                   name, "cannot create dataset"));
    if (count_of(dims) > 0)
        check(H5Dwrite(d.id(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), name, "cannot write (disk full?)");
}

void File::write(const std::string& name, const Vector& v) {
    write_array(name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {hsize_t(v.size())}, v.data());
}

void File::write(const std::string& name, const RowMatrix& m) {
    write_array(name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {hsize_t(m.rows()), hsize_t(m.cols())}, m.data());
}

void File::write(const std::string& name, const std::vector<std::int64_t>& v) {
    write_array(name, H5T_NATIVE_INT64, H5T_STD_I64LE, {hsize_t(v.size())}, v.data());
}

void File::write_scalar(const std::string& name, double x) {
    write_array(name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {}, &x);
}

std::vector<hsize_t> File::shape(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle s(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    return extent(s.id(), name);
}

File::Type File::type_class(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const H5T_class_t c = H5Tget_class(t.id());
    return c == H5T_FLOAT ? Type::Float : c == H5T_INTEGER ? Type::Integer : Type::Other;
}

std::size_t File::type_size(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const std::size_t n = H5Tget_size(t.id());
    if (n == 0) fail(name, "cannot read the type");
    return n;
}

Vector File::read_vector(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle s(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const auto dims = extent(s.id(), name);
    if (dims.size() != 1) fail(name, "expected a 1-d dataset, found " + describe(dims));
    if (!is_numeric(t.id())) fail(name, "expected numbers, found " + type_text(t.id()));
    Vector v(static_cast<Index>(dims[0]));
    if (v.size() > 0)
        check(H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name, "cannot read");
    return v;
}

RowMatrix File::read_matrix(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle s(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const auto dims = extent(s.id(), name);
    if (dims.size() != 2) fail(name, "expected a 2-d dataset, found " + describe(dims));
    if (!is_numeric(t.id())) fail(name, "expected numbers, found " + type_text(t.id()));
    RowMatrix m(static_cast<Index>(dims[0]), static_cast<Index>(dims[1]));
    if (m.size() > 0)
        check(H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, m.data()), name, "cannot read");
    return m;
}

double File::read_scalar(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle s(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const auto dims = extent(s.id(), name);
    if (!(dims.empty() || (dims.size() == 1 && dims[0] == 1))) fail(name, "expected a scalar, found " + describe(dims));
    if (!is_numeric(t.id())) fail(name, "expected a number, found " + type_text(t.id()));
    double x = 0;
    check(H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &x), name, "cannot read");
    return x;
}

std::vector<std::int64_t> File::read_ints(const std::string& name) const {
    Handle d = open_dataset(name);
    Handle s(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const auto dims = extent(s.id(), name);
    if (dims.size() != 1) fail(name, "expected a 1-d dataset, found " + describe(dims));
    if (H5Tget_class(t.id()) != H5T_INTEGER) fail(name, "expected integers, found " + type_text(t.id()));
    std::vector<std::int64_t> v(dims[0]);
    if (!v.empty())
        check(H5Dread(d.id(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name, "cannot read");
    return v;
}

std::vector<std::uint8_t> File::read_u8(const std::string& name, std::vector<hsize_t>& dims) const {
    Handle d = open_dataset(name);
    Handle s(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    dims = extent(s.id(), name);
    if (H5Tget_class(t.id()) != H5T_INTEGER || H5Tget_size(t.id()) != 1 || H5Tget_sign(t.id()) != H5T_SGN_NONE)
        fail(name, "expected uint8, found " + type_text(t.id()));
    std::vector<std::uint8_t> v(count_of(dims));
    if (!v.empty())
        check(H5Dread(d.id(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name, "cannot read");
    return v;
}

RowMatrix File::read_rows(const std::string& name, hsize_t first, hsize_t count) const {
    Handle d = open_dataset(name);
    Handle fs(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    const auto dims = extent(fs.id(), name);
    if (dims.empty() || dims.size() > 2) fail(name, "expected a 1-d or 2-d dataset, found " + describe(dims));
    if (first > dims[0] || count > dims[0] - first)
        fail(name, "rows " + std::to_string(first) + ".." + std::to_string(first + count) +
                       " requested, the dataset has " + std::to_string(dims[0]));
    RowMatrix m(static_cast<Index>(count), static_cast<Index>(dims.size() == 2 ? dims[1] : 1));
    if (m.size() == 0) return m;
    Handle ms = select_rows(fs.id(), name, first, count);
    check(H5Dread(d.id(), H5T_NATIVE_DOUBLE, ms.id(), fs.id(), H5P_DEFAULT, m.data()), name, "cannot read");
    return m;
}

std::vector<std::uint8_t> File::read_rows_u8(const std::string& name, hsize_t first, hsize_t count) const {
    Handle d = open_dataset(name);
    Handle fs(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle t(check(H5Dget_type(d.id()), name, "cannot read the type"));
    const auto dims = extent(fs.id(), name);
    if (H5Tget_class(t.id()) != H5T_INTEGER || H5Tget_size(t.id()) != 1 || H5Tget_sign(t.id()) != H5T_SGN_NONE)
        fail(name, "expected uint8, found " + type_text(t.id()));
    if (dims.empty() || dims.size() > 2) fail(name, "expected a 1-d or 2-d dataset, found " + describe(dims));
    if (first > dims[0] || count > dims[0] - first)
        fail(name, "rows " + std::to_string(first) + ".." + std::to_string(first + count) +
                       " requested, the dataset has " + std::to_string(dims[0]));
    auto v = huge_vector<std::uint8_t>(count * (dims.size() == 2 ? dims[1] : 1));
    if (v.empty()) return v;
    Handle ms = select_rows(fs.id(), name, first, count);
    check(H5Dread(d.id(), H5T_NATIVE_UINT8, ms.id(), fs.id(), H5P_DEFAULT, v.data()), name, "cannot read");
    return v;
}

Vector File::read_row(const std::string& name, hsize_t row) const { return read_rows(name, row, 1).row(0).transpose(); }

// ---------------------------------------------------------------------------------------------
// Attributes

Handle File::open_attr(const std::string& obj, const std::string& name) const {
    Handle o = open_object(obj);
    if (H5Aexists(o.id(), name.c_str()) <= 0) fail(obj, "no attribute '" + name + "'");
    return Handle(check(H5Aopen(o.id(), name.c_str(), H5P_DEFAULT), obj, "cannot open attribute '" + name + "'"));
}

bool File::has_attr(const std::string& obj, const std::string& name) const {
    if (!exists(obj)) return false;
    Handle o = open_object(obj);
    return H5Aexists(o.id(), name.c_str()) > 0;
}

void File::write_attr(const std::string& obj, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                      const void* data) {
    Handle o = open_object(obj);
    const std::string what = "attribute '" + name + "': ";
    if (check(H5Aexists(o.id(), name.c_str()), obj, what + "cannot check") > 0)
        check(H5Adelete(o.id(), name.c_str()), obj, what + "cannot replace");
    Handle space(check(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                       obj, what + "cannot create a dataspace"));
    Handle a(check(H5Acreate2(o.id(), name.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT), obj,
                   what + "cannot create"));
    if (count_of(dims) > 0) check(H5Awrite(a.id(), type, data), obj, what + "cannot write");
}

void File::set_attr(const std::string& obj, const std::string& name, const std::string& value) {
    // Variable-length UTF-8, as h5py writes str attributes.
    Handle t(check(H5Tcopy(H5T_C_S1), obj, "cannot create a string type"));
    check(H5Tset_size(t.id(), H5T_VARIABLE), obj, "cannot create a string type");
    check(H5Tset_cset(t.id(), H5T_CSET_UTF8), obj, "cannot create a string type");
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
    const std::string what = "attribute '" + name + "': ";
    Handle t(check(H5Aget_type(a.id()), obj, what + "cannot read the type"));
    if (H5Tget_class(t.id()) != H5T_STRING) fail(obj, what + "expected a string, found " + type_text(t.id()));
    Handle s(check(H5Aget_space(a.id()), obj, what + "cannot read the shape"));
    if (check(H5Sget_simple_extent_npoints(s.id()), obj, what + "cannot read the shape") != 1)
        fail(obj, what + "expected one string, found " + describe(extent(s.id(), obj)));
    // Read in the stored kind (variable or fixed length) and character set.
    Handle mt(check(H5Tcopy(H5T_C_S1), obj, what + "cannot create a string type"));
    check(H5Tset_cset(mt.id(), H5Tget_cset(t.id())), obj, what + "cannot create a string type");
    if (check(H5Tis_variable_str(t.id()), obj, what + "cannot read the type") > 0) {
        check(H5Tset_size(mt.id(), H5T_VARIABLE), obj, what + "cannot create a string type");
        char* p = nullptr;
        check(H5Aread(a.id(), mt.id(), &p), obj, what + "cannot read");
        std::string v = p ? p : "";
        H5free_memory(p);
        return v;
    }
    const std::size_t n = H5Tget_size(t.id());
    std::string v(n + 1, '\0');  // room for the terminator H5T_STR_NULLTERM adds
    check(H5Tset_size(mt.id(), n + 1), obj, what + "cannot create a string type");
    check(H5Tset_strpad(mt.id(), H5T_STR_NULLTERM), obj, what + "cannot create a string type");
    check(H5Aread(a.id(), mt.id(), v.data()), obj, what + "cannot read");
    v.resize(std::strlen(v.c_str()));  // null-padded or space-padded are cut at the first null
    return v;
}

std::vector<std::int64_t> File::attr_ints(const std::string& obj, const std::string& name) const {
    Handle a = open_attr(obj, name);
    const std::string what = "attribute '" + name + "': ";
    Handle t(check(H5Aget_type(a.id()), obj, what + "cannot read the type"));
    if (H5Tget_class(t.id()) != H5T_INTEGER) fail(obj, what + "expected integers, found " + type_text(t.id()));
    Handle s(check(H5Aget_space(a.id()), obj, what + "cannot read the shape"));
    std::vector<std::int64_t> v(
        std::size_t(check(H5Sget_simple_extent_npoints(s.id()), obj, what + "cannot read the shape")));
    if (!v.empty()) check(H5Aread(a.id(), H5T_NATIVE_INT64, v.data()), obj, what + "cannot read");
    return v;
}

std::vector<double> File::attr_doubles(const std::string& obj, const std::string& name) const {
    Handle a = open_attr(obj, name);
    const std::string what = "attribute '" + name + "': ";
    Handle t(check(H5Aget_type(a.id()), obj, what + "cannot read the type"));
    if (!is_numeric(t.id())) fail(obj, what + "expected numbers, found " + type_text(t.id()));
    Handle s(check(H5Aget_space(a.id()), obj, what + "cannot read the shape"));
    std::vector<double> v(
        std::size_t(check(H5Sget_simple_extent_npoints(s.id()), obj, what + "cannot read the shape")));
    if (!v.empty()) check(H5Aread(a.id(), H5T_NATIVE_DOUBLE, v.data()), obj, what + "cannot read");
    return v;
}

std::int64_t File::attr_int(const std::string& obj, const std::string& name) const {
    const auto v = attr_ints(obj, name);
    if (v.size() != 1) fail(obj, "attribute '" + name + "': expected one integer, found " + std::to_string(v.size()));
    return v[0];
}

double File::attr_double(const std::string& obj, const std::string& name) const {
    const auto v = attr_doubles(obj, name);
    if (v.size() != 1) fail(obj, "attribute '" + name + "': expected one number, found " + std::to_string(v.size()));
    return v[0];
}

// ---------------------------------------------------------------------------------------------
// Series

namespace {
struct SeriesLayout {
    std::vector<hsize_t> dims, maxdims, chunk;
};

SeriesLayout series_layout(hsize_t width, hsize_t chunk_rows) {
    // Chunks of about 1 MiB at most: one row of a 39760-wide theta is one chunk.
    chunk_rows = std::max<hsize_t>(1, std::min<hsize_t>(chunk_rows, 131072 / std::max<hsize_t>(width, 1)));
    if (width == 0) return {{0}, {H5S_UNLIMITED}, {chunk_rows}};
    return {{0, width}, {H5S_UNLIMITED, width}, {chunk_rows, width}};
}
}  // namespace

void File::create_series(const std::string& name, hsize_t width, hsize_t chunk_rows) {
    if (exists(name)) fail(name, "dataset exists");
    const SeriesLayout l = series_layout(width, chunk_rows);
    Handle space(check(H5Screate_simple(int(l.dims.size()), l.dims.data(), l.maxdims.data()), name,
                       "cannot create a dataspace"));
    Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), name, "cannot create series"));
    check(H5Pset_chunk(dcpl.id(), int(l.chunk.size()), l.chunk.data()), name, "cannot set the chunk size");
    Handle lcpl(check(intermediate_groups(), name, "cannot create series"));
    Handle d(check(H5Dcreate2(m_file.id(), name.c_str(), H5T_IEEE_F64LE, space.id(), lcpl.id(), dcpl.id(), H5P_DEFAULT),
                   name, "cannot create series"));
    m_series_changed = true;
}

void File::create_series_int(const std::string& name) {
    if (exists(name)) fail(name, "dataset exists");
    const SeriesLayout l = series_layout(0, 64);
    Handle space(check(H5Screate_simple(1, l.dims.data(), l.maxdims.data()), name, "cannot create a dataspace"));
    Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), name, "cannot create series"));
    check(H5Pset_chunk(dcpl.id(), 1, l.chunk.data()), name, "cannot set the chunk size");
    Handle lcpl(check(intermediate_groups(), name, "cannot create series"));
    Handle d(check(H5Dcreate2(m_file.id(), name.c_str(), H5T_STD_I64LE, space.id(), lcpl.id(), dcpl.id(), H5P_DEFAULT),
                   name, "cannot create series"));
    m_series_changed = true;
}

void File::append_row(const std::string& name, hid_t mem_type, const void* row, hsize_t width) {
    Handle d = open_dataset(name);
    Handle fs(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    auto dims = extent(fs.id(), name);
    if (dims.empty() || dims.size() > 2) fail(name, "expected a series, found " + describe(dims));
    const hsize_t w = dims.size() == 2 ? dims[1] : 1;
    if (w != width) fail(name, "appending a row of " + std::to_string(width) + " to rows of " + std::to_string(w));
    const hsize_t n = dims[0];
    dims[0] = n + 1;
    check(H5Dset_extent(d.id(), dims.data()), name, "cannot grow the series (was it created by create_series?)");
    Handle grown(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    Handle ms = select_rows(grown.id(), name, n, 1);
    check(H5Dwrite(d.id(), mem_type, ms.id(), grown.id(), H5P_DEFAULT, row), name, "cannot write (disk full?)");
}

void File::append(const std::string& name, const double* row, hsize_t width) {
    append_row(name, H5T_NATIVE_DOUBLE, row, width);
}

void File::append_int(const std::string& name, std::int64_t x) { append_row(name, H5T_NATIVE_INT64, &x, 1); }

hsize_t File::rows(const std::string& name) const {
    const auto dims = shape(name);
    if (dims.empty()) fail(name, "expected a series, found a scalar");
    return dims[0];
}

void File::truncate_rows(const std::string& name, hsize_t n) {
    Handle d = open_dataset(name);
    Handle fs(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    auto dims = extent(fs.id(), name);
    if (dims.empty()) fail(name, "expected a series, found a scalar");
    if (n > dims[0]) fail(name, "cannot truncate " + std::to_string(dims[0]) + " rows to " + std::to_string(n));
    dims[0] = n;
    check(H5Dset_extent(d.id(), dims.data()), name, "cannot shrink the series");
}

void File::overwrite_row(const std::string& name, hsize_t row, const double* data, hsize_t width) {
    Handle d = open_dataset(name);
    Handle fs(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    const auto dims = extent(fs.id(), name);
    if (dims.empty() || dims.size() > 2) fail(name, "expected a 1-d or 2-d dataset, found " + describe(dims));
    const hsize_t w = dims.size() == 2 ? dims[1] : 1;
    if (row >= dims[0] || w != width)
        fail(name, "cannot overwrite row " + std::to_string(row) + " of width " + std::to_string(width) + " in " +
                       describe(dims));
    Handle ms = select_rows(fs.id(), name, row, 1);
    check(H5Dwrite(d.id(), H5T_NATIVE_DOUBLE, ms.id(), fs.id(), H5P_DEFAULT, data), name, "cannot write (disk full?)");
}

void File::overwrite(const std::string& name, const Vector& v) {
    Handle d = open_dataset(name);
    Handle fs(check(H5Dget_space(d.id()), name, "cannot read the shape"));
    const auto dims = extent(fs.id(), name);
    if (dims.size() != 1 || dims[0] != hsize_t(v.size()))
        fail(name, "cannot overwrite " + describe(dims) + " with " + std::to_string(v.size()) + " values");
    if (v.size() > 0)
        check(H5Dwrite(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), name,
              "cannot write (disk full?)");
}

void File::remove(const std::string& name) {
    if (!exists(name)) fail(name, "no such object");
    check(H5Ldelete(m_file.id(), name.c_str(), H5P_DEFAULT), name, "cannot delete");
}

namespace {
herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
}
}  // namespace

std::vector<std::string> File::children(const std::string& group) const {
    std::vector<std::string> names;
    if (!exists(group)) return names;
    Handle g(check(H5Gopen2(m_file.id(), group.c_str(), H5P_DEFAULT), group, "cannot open group"));
    check(H5Literate(g.id(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names), group,
          "cannot list the group");
    return names;
}

}  // namespace tdyn::h5
