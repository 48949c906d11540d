// Parsers of flag values that CLI11's validators cannot check alone. Pure functions of the
// text (no files), so fuzz/steps_fuzz.cpp can feed them arbitrary bytes.
#pragma once

#include "tdyn/common.hpp"
#include "tdyn/spectrum.hpp"

#include <string>
#include <vector>

namespace tdyn::cli {

/// `tdyn spectrum --steps`: "last" (or empty), "stored", or a list of steps and ranges
/// "0,10,50:100:10" (first:last:stride, last inclusive). Every step must be <= last_step;
/// a range is checked before it is expanded, so "0:999999999999:1" fails at once instead of
/// filling memory. Throws Error naming --steps.
std::vector<Index> parse_steps(const std::string& text, const std::vector<Index>& stored, Index last_step);

/// `--which`: top, bottom or both (tdyn train's in-line spectrum and tdyn spectrum). Throws
/// Error naming --which.
Ends parse_which(const std::string& which);

}  // namespace tdyn::cli
