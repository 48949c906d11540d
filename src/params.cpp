#include "tdyn/params.hpp"

#include <filesystem>

namespace tdyn {

namespace fs = std::filesystem;

namespace {

std::vector<std::int64_t> widths_of(const Architecture& arch) { return {arch.widths.begin(), arch.widths.end()}; }

}  // namespace

h5::File open_for_reading(const std::string& path) {
    try {
        return h5::File::open_read(path, true);
    } catch (const Error&) {
        return h5::File::open_read(path, false);
    }
}

Vector read_params(const std::string& path, const Architecture& arch) {
    h5::File f = open_for_reading(path);
    if (!f.exists("/params/theta")) throw Error(path + ": not a params file: no dataset /params/theta");
    if (f.has_attr("/", "arch")) {
        const auto w = f.attr_ints("/", "arch");
        if (w != widths_of(arch))
            throw Error(path + ": params are for arch " + Architecture{{w.begin(), w.end()}}.to_string() +
                        ", but the run uses " + arch.to_string());
    }
    const auto dims = f.shape("/params/theta");  // checked before reading: a huge dataset is not read
    if (dims.size() == 1 && Index(dims[0]) != arch.num_params())
        throw Error(path + ": /params/theta has " + std::to_string(dims[0]) + " entries; arch " + arch.to_string() +
                    " needs " + std::to_string(arch.num_params()));
    const Vector theta = f.read_vector("/params/theta");
    if (theta.size() != arch.num_params())
        throw Error(path + ": /params/theta has " + std::to_string(theta.size()) + " entries; arch " +
                    arch.to_string() + " needs " + std::to_string(arch.num_params()));
    if (!theta.allFinite()) throw Error(path + ": /params/theta contains NaN or Inf");
    return theta;
}

void write_params(const std::string& path, const Vector& theta, const Architecture& arch) {
    h5::File f = h5::File::create(path);
    f.write_vector("/params/theta", theta);
    f.set_attr("/", "arch", widths_of(arch));
    f.set_attr("/", "format", std::string("tdyn-params"));
}

void check_output_path(const std::string& path, bool force, const std::string& flag) {
    if (path.empty()) throw Error(flag + ": no output path given");
    if (h5::memory_only()) return;  // MPI ranks other than 0 write in memory; rank 0 checks the path
    const fs::path p(path);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error(flag + " " + path + ": directory '" + dir.string() + "' does not exist");
    if (fs::exists(p, ec) && !force)
        throw Error(flag + " " + path + ": file exists (use --force to overwrite it, or --resume to continue it)");
    if (fs::is_directory(p, ec)) throw Error(flag + " " + path + ": is a directory");
}

}  // namespace tdyn
