// Params files (/params/theta and the arch attribute) and the checks every writer of a new
// file makes before any work.
#pragma once

#include "tdyn/h5.hpp"
#include "tdyn/network.hpp"

#include <string>

namespace tdyn {

/// /params/theta of a params file (or a run file: its latest theta), checked against arch:
/// length, finiteness, and the file's "arch" attribute when it has one.
Vector read_params(const std::string& path, const Architecture& arch);
/// Writes a new params file: /params/theta and the arch attribute (fails if path exists).
void write_params(const std::string& path, const Vector& theta, const Architecture& arch);

/// Checks an output path before anything is computed: its directory exists, and the file
/// does not unless `force`. Throws Error naming `flag`.
void check_output_path(const std::string& path, bool force, const std::string& flag = "--out");

/// Opens read-only, with SWMR when the file allows it (a run being written, or killed).
h5::File open_for_reading(const std::string& path);

}  // namespace tdyn
