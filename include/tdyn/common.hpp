// Types and the one user-facing error type shared by every tdyn module.
#pragma once

#include <Eigen/Core>
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace tdyn {

using Scalar = double;
using Index = Eigen::Index;
using Vector = Eigen::VectorXd;
/// Column-major: blocks of vectors, P x M, one vector per column.
using Matrix = Eigen::MatrixXd;
/// Row-major: samples are rows (X is k x d), and the flat theta stores W_l row-major.
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

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
