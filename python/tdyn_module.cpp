// The compiled part of the Python module `tdyn` (python/tdyn/__init__.py is the rest): thin
// wrappers over the C++ library, so every number comes from the same code as the CLI's.
// Arrays: float64, contiguous, finite, of the right length, or tdyn.Error; never converted, so
// nothing is read as garbage and nothing the library keeps points into a temporary copy.
// Long calls release the GIL; Ctrl-C is checked between H V products and between steps.
#include "tdyn/analyses.hpp"
#include "tdyn/data.hpp"
#include "tdyn/driver.hpp"
#include "tdyn/evaluation.hpp"
#include "tdyn/hvp.hpp"
#include "tdyn/lyapunov.hpp"
#include "tdyn/network.hpp"
#include "tdyn/params.hpp"
#include "tdyn/run.hpp"
#include "tdyn/spectrum.hpp"
#include "tdyn/trainer.hpp"

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>

namespace py = pybind11;

namespace tdyn::python {

namespace {

// ---------------------------------------------------------------------------------------------
// Arrays in and out

std::string shape_text(const py::array& a) {
    std::string s = "[";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + "]";
}

constexpr int kAligned = 0x0100;  // NPY_ARRAY_ALIGNED

/// The float64 data of `a`, checked: dtype, memory order, finiteness. `order` 'C' (row-major,
/// also any contiguous 1-D array) or 'F' (column-major: a block of vectors, one per column).
const double* checked_data(const py::array& a, const std::string& name, char order) {
    if (!a.dtype().equal(py::dtype::of<double>()))
        throw Error(name + ": expected a float64 array, found " + std::string(py::str(a.dtype())) +
                    " (tdyn never converts silently: pass " + name + ".astype(numpy.float64), a copy)");
    const bool c = a.flags() & py::array::c_style, f = a.flags() & py::array::f_style;
    if (!c && !f)
        throw Error(name + ": " + shape_text(a) +
                    " is not contiguous (a strided view or slice); pass numpy.ascontiguousarray(" + name + "), a copy");
    if (order == 'C' && !c)
        throw Error(name + ": " + shape_text(a) + " is Fortran-ordered; tdyn stores samples as rows (C order): pass " +
                    "numpy.ascontiguousarray(" + name + "), a copy");
    if (order == 'F' && !f)
        throw Error(name + ": " + shape_text(a) +
                    " is C-ordered; a block holds one vector per column (Fortran order, as tdyn stores it): pass " +
                    "numpy.asfortranarray(" + name + "), a copy, or allocate it with order='F'");
    if (!(a.flags() & kAligned)) throw Error(name + ": the array is not aligned; pass " + name + ".copy()");
    const auto* p = static_cast<const double*>(a.data());
    if (!Eigen::Map<const Eigen::ArrayXd>(p, a.size()).allFinite())
        throw Error(name + ": holds NaN or infinite values");
    return p;
}

/// theta (or any [P] vector): 1-D float64 of length P.
Eigen::Map<const Vector> vector_arg(const py::array& a, const std::string& name, Index P, const std::string& what) {
    if (a.ndim() != 1 || a.shape(0) != P)
        throw Error(name + ": expected shape [" + std::to_string(P) + "] (" + what + "), found " + shape_text(a));
    return {checked_data(a, name, 'C'), P};
}

/// V: [P] or [P, M] (Fortran order); viewed as P x M without a copy.
Eigen::Map<const Matrix> block_arg(const py::array& a, const std::string& name, Index P) {
    if ((a.ndim() != 1 && a.ndim() != 2) || a.shape(0) != P)
        throw Error(name + ": expected shape [" + std::to_string(P) + "] or [" + std::to_string(P) +
                    ", M] (vectors of the parameters), found " + shape_text(a));
    const Index M = a.ndim() == 1 ? 1 : a.shape(1);
    return {checked_data(a, name, 'F'), P, M};
}

/// A new array of V's shape (Fortran order), written in place by the library.
py::array_t<double> like_block(const py::array& V) {
    if (V.ndim() == 1) return py::array_t<double>(V.shape(0));
    return py::array_t<double, py::array::f_style>({V.shape(0), V.shape(1)});
}
Eigen::Map<Matrix> block_out(py::array_t<double>& out, Index P) {
    return {out.mutable_data(), P, out.ndim() == 1 ? 1 : Index(out.shape(1))};
}

/// An Eigen object moved into a NumPy array that owns it (no copy of the numbers).
template <class M>
py::array adopt(M&& m) {
    using T = std::decay_t<M>;
    auto* heap = new T(std::move(m));
    py::capsule owner(heap, [](void* p) { delete static_cast<T*>(p); });
    const auto s = py::ssize_t(sizeof(double));
    if constexpr (T::ColsAtCompileTime == 1) return py::array_t<double>({heap->size()}, {s}, heap->data(), owner);
    else if constexpr (T::IsRowMajor)
        return py::array_t<double>({heap->rows(), heap->cols()}, {s * heap->cols(), s}, heap->data(), owner);
    else return py::array_t<double>({heap->rows(), heap->cols()}, {s, s * heap->rows()}, heap->data(), owner);
}

/// A read-only view of memory that `owner` keeps alive.
py::array view(const RowMatrix& m, py::handle owner) {
    const auto s = py::ssize_t(sizeof(double));
    py::array a({m.rows(), m.cols()}, {s * m.cols(), s}, m.data(), owner);
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C

/// Thrown inside a C++ call when Python has a pending KeyboardInterrupt (the Python error is
/// set; the wrapper raises it once the GIL is back).
struct Interrupted {};

/// Called with the GIL released, from the thread that released it: runs Python's signal
/// handlers; true when one raised (KeyboardInterrupt is then the pending Python error).
bool signal_pending() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
}

/// The Evaluation's sample-sum seam (comm.hpp) on one process: the sums are already global, so
/// sum() only looks for Ctrl-C. Every H V block ends in one sum(), so a long eigen-solve stops
/// at the next product. Armed only inside hvp-like calls: an interrupted forward pass would
/// leave the Evaluation half-moved.
class InterruptibleComm final : public SampleComm {
public:
    void sum(double*, Index) const override {
        if (armed && signal_pending()) throw Interrupted{};
    }
    Index global_rows(Index local) const override { return local; }
    mutable bool armed = false;
};

// ---------------------------------------------------------------------------------------------
// Data, Network, Evaluation

struct Data {
    std::shared_ptr<const Dataset> d;
    /// X as float64 for the X property when the data set holds pixels: made on first access.
    std::shared_ptr<const RowMatrix> dense{};
    const RowMatrix& X() {
        if (!d->X.has_pixels()) return d->X.values();
        if (!dense) dense = std::make_shared<const RowMatrix>(d->X.dense());
        return *dense;
    }
};

Data make_data(const py::array& X, const py::array& T, const std::string& name) {
    if (X.ndim() != 2) throw Error("X: expected shape [k, d] (samples are rows), found " + shape_text(X));
    if (T.ndim() != 2 || T.shape(0) != X.shape(0))
        throw Error("T: expected shape [" + std::to_string(X.shape(0)) +
                    ", c] (one target row per sample of X), found " + shape_text(T));
    if (X.shape(0) == 0) throw Error("X: no samples");
    auto d = std::make_shared<Dataset>();
    d->name = name;
    // The Dataset owns its copy: the caller's arrays may change or go away afterwards.
    d->X = InputData(RowMatrix(Eigen::Map<const RowMatrix>(checked_data(X, "X", 'C'), X.shape(0), X.shape(1))));
    d->T = Eigen::Map<const RowMatrix>(checked_data(T, "T", 'C'), T.shape(0), T.shape(1));
    return {std::move(d)};
}

/// An Evaluation the module owns (with its InputMatrix and a reference to the data), or the
/// step's own Evaluation lent to a train() callback for the duration of the call.
struct PyEvaluation {
    std::shared_ptr<const Dataset> data;
    InterruptibleComm comm;
    std::unique_ptr<InputMatrix> X;
    std::unique_ptr<Evaluation> owned;
    Evaluation* e = nullptr;  // owned.get(), or the lent one; nullptr once the lender took it back
    std::mutex busy;          // one call at a time: the Evaluation keeps scratch buffers

    Evaluation& get() {
        if (!e) throw Error("Evaluation: this was a training step's own Evaluation, valid only inside its callback");
        return *e;
    }
    /// f() with the GIL released and Ctrl-C checked at each H V block.
    /// `interruptible`: false for a forward pass, which must not stop half-way.
    template <class F>
    void released(F&& f, bool interruptible = true) {
        Evaluation& ev = get();
        std::unique_lock<std::mutex> lock(busy, std::try_to_lock);
        if (!lock) throw Error("Evaluation: in use by another thread (give each thread its own Evaluation)");
        try {
            py::gil_scoped_release nogil;
            comm.armed = interruptible && owned != nullptr;
            f(ev);
            comm.armed = false;
        } catch (const Interrupted&) {
            comm.armed = false;
            throw py::error_already_set();
        } catch (...) {
            comm.armed = false;
            throw;
        }
    }
};

std::unique_ptr<PyEvaluation> make_evaluation(const Architecture& arch, const Data& data, const py::array& theta,
                                              double weight_decay, const std::string& precision,
                                              const std::string& x_path) {
    const Dataset& d = *data.d;
    if (d.X.cols() != arch.inputs())
        throw Error("data: " + arch.to_string() + " takes " + std::to_string(arch.inputs()) + " inputs, " + d.name +
                    " has " + std::to_string(d.X.cols()));
    if (d.T.cols() != arch.outputs())
        throw Error("data: " + arch.to_string() + " has " + std::to_string(arch.outputs()) + " outputs, " + d.name +
                    " has " + std::to_string(d.T.cols()) + " target columns");
    const Vector th = vector_arg(theta, "theta", arch.num_params(), "the parameters of " + arch.to_string());
    auto p = std::make_unique<PyEvaluation>();
    p->data = data.d;
    const Precision prec = parse_precision(precision);
    const XPath xp = parse_xpath(x_path);
    {
        py::gil_scoped_release nogil;
        p->X = std::make_unique<InputMatrix>(p->data->X, xp, prec);
        p->owned = std::make_unique<Evaluation>(arch, *p->X, p->data->T, th, EvaluationOptions{0.0, &p->comm});
        p->owned->set_weight_decay(weight_decay);
    }
    p->e = p->owned.get();
    return p;
}

// ---------------------------------------------------------------------------------------------
// Eigenvalues

struct Eigenpairs {
    py::array values, vectors, residuals;
    Index hvps = 0;
    bool converged = false;
    std::string status;
};

Eigenpairs eigenvalues(PyEvaluation& p, Index K, const std::string& which, std::optional<double> tol,
                       const std::string& solver, Index max_iter, Index krylov, std::optional<py::array> start) {
    const Ends ends = parse_ends(which);
    if (ends == Ends::Both) throw Error("which: expected top or bottom, found both (call once for each end)");
    Evaluation& e = p.get();
    EigenOptions o;
    o.eigs = K;
    if (tol) o.tol = *tol;
    if (!(o.tol > 0)) throw Error("tol: must be a positive number, found " + format_number(o.tol));
    o.max_iter = max_iter;
    o.krylov = krylov;
    if (solver == "lanczos") o.solver = EigenSolver::Lanczos;
    else if (solver == "davidson") o.solver = EigenSolver::Davidson;
    else throw Error("solver: expected lanczos or davidson, found '" + solver + "'");
    SpectrumOptions checked;
    checked.eig = o;
    checked.ends = ends;
    check_spectrum_options(checked, e.num_params());  // eigs and krylov, named
    std::optional<Matrix> s;
    if (start) s = block_arg(*start, "start", e.num_params());
    EigenResult r;
    p.released([&](Evaluation& ev) {
        r = hessian_eigs(ev, ends == Ends::Top ? Which::Top : Which::Bottom, o, s ? &*s : nullptr);
    });
    return {
        adopt(std::move(r.values)), adopt(std::move(r.vectors)), adopt(std::move(r.residuals)), r.matvecs, r.converged,
        to_string(r.status)};
}

// ---------------------------------------------------------------------------------------------
// Run files

py::object read_dataset(h5::File& f, const std::string& name) {
    const auto shape = f.shape(name);
    if (shape.empty()) return py::float_(f.read_scalar(name));
    if (shape.size() == 1) {
        if (f.type_class(name) == h5::File::Type::Integer) {
            auto v = f.read_ints(name);
            return py::array_t<std::int64_t>(py::ssize_t(v.size()), v.data());
        }
        return adopt(f.read_vector(name));
    }
    if (shape.size() == 2) return adopt(f.read_matrix(name));
    return py::none();
}

/// Every dataset of a group (not its subgroups) as NumPy arrays; `skip` names left out.
py::object read_group(h5::File& f, const std::string& group, const std::vector<std::string>& skip = {}) {
    if (!f.exists(group)) return py::none();
    py::dict out;
    for (const std::string& name : f.children(group)) {
        if (std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
        const std::string path = group + "/" + name;
        try {
            out[py::str(name)] = read_dataset(f, path);
        } catch (const Error&) {  // a subgroup (e.g. a checkpoint series folder): not a dataset
        }
    }
    return out;
}

py::dict config_dict(const TrainConfig& c) {
    py::dict d;
    d["data"] = c.data;
    d["samples"] = c.samples;
    d["arch"] = c.arch;
    d["activation"] = to_string(c.activation);
    d["output"] = to_string(c.output);
    d["lr"] = c.lr;
    d["weight_decay"] = c.weight_decay;
    d["steps"] = c.steps;
    d["batch"] = c.batch;
    d["seed"] = c.seed;
    d["init"] = c.init;
    d["save_theta_every"] = c.save_theta_every;
    d["precision"] = to_string(c.precision);
    d["x_path"] = to_string(c.x_path);
    return d;
}

struct Run {
    std::unique_ptr<RunReader> reader;
    std::string data_dir;
    std::shared_ptr<const Dataset> data;  // loaded on first replay or evaluation
    std::unique_ptr<Trainer> trainer;

    RunReader& r() {
        if (!reader) throw Error("run: closed");
        return *reader;
    }
    std::shared_ptr<const Dataset> dataset() {
        if (!data) data = std::make_shared<const Dataset>(load_config_data(r().info().config, data_dir));
        return data;
    }
    Trainer& replayer() {
        if (!trainer) trainer = std::make_unique<Trainer>(r().info().config, dataset());
        return *trainer;
    }
};

/// tdyn growth for one window of a run, in memory: thetas replayed with the run's trainer, Ctrl-C
/// checked after every sweep of the window.
py::dict run_window_growth(Run& r, Index start, Index window, Index vectors, Index block, Index passes, double tol,
                           std::optional<std::uint64_t> seed) {
    const RunInfo& info = r.r().info();
    if (start < 0 || window < 1 || start + window > info.last_step)
        throw Error("window_growth: steps " + std::to_string(start) + ".." + std::to_string(start + window) +
                    " must lie in the run's 0.." + std::to_string(info.last_step) + " (window >= 1)");
    const Index P = info.config.architecture().num_params();
    if (block < 0 || block > P)
        throw Error("block: must be between 0 (2 x vectors) and P = " + std::to_string(P) + ", found " +
                    std::to_string(block));
    WindowGrowthOptions o;
    o.vectors = vectors;
    o.block = block > 0 ? block : std::min(P, 2 * vectors);
    o.max_passes = passes;
    o.tol = tol;
    o.seed = seed ? *seed : info.config.seed;  // as tdyn growth: the run's seed unless given
    Trainer& tr = r.replayer();
    WindowGrowth g;
    try {
        py::gil_scoped_release nogil;
        std::vector<Vector> thetas(static_cast<std::size_t>(window));
        thetas[0] = r.r().theta(start, tr);
        for (Index s = 1; s < window; ++s) {
            if (signal_pending()) throw Interrupted{};
            thetas[std::size_t(s)] = thetas[std::size_t(s - 1)];
            if (!tr.step(start + s - 1, thetas[std::size_t(s)]).finite())
                throw Error("window_growth: the replayed loss is not finite at step " + std::to_string(start + s - 1));
        }
        g = trajectory_window_growth(tr, start, thetas, info.config.lr, o, [&](Index applied) {
            if (applied % window == 0 && signal_pending()) throw Interrupted{};
        });
    } catch (const Interrupted&) {
        throw py::error_already_set();
    }
    py::dict d;
    d["log_sigma"] = adopt(Vector(g.log_sigma));
    d["exponents"] = adopt(Vector(g.log_sigma / double(window)));
    d["error"] = adopt(Vector(g.error));
    d["passes"] = g.passes;
    d["products"] = g.products;
    d["converged"] = g.converged;
    d["right"] = adopt(Matrix(g.right));
    return d;
}

// ---------------------------------------------------------------------------------------------
// Training through the driver, with a Python callable per step

struct StepInfo {
    Index t = 0, to = 0;
    double loss = 0, accuracy = 0, grad_norm = 0;
    py::array theta, next_theta;
    py::object evaluation;
};

/// A Python callable as a plug-in of the step loop: it sees every step once, with theta_t, the
/// step's statistics and the step's own Evaluation (lent for the call). It writes nothing to
/// the file, so resume needs nothing from it. When it raises, the exception is kept, the loop
/// stops cleanly before the next step (status interrupted, theta stored: resumable), and
/// train() raises it.
class CallbackPlugin final : public Analysis {
public:
    CallbackPlugin(py::function fn, std::atomic<bool>& stop, std::optional<py::error_already_set>& error)
        : m_fn(std::move(fn)), m_stop(stop), m_error(error) {}
    std::string name() const override { return "callback"; }
    void create(h5::File&) override {}
    void start(Index, const Vector&) override {}
    void truncate(h5::File&, Index) override {}
    void restore(h5::File&, Index) override {}
    void checkpoint(h5::File&, Index) override {}
    void step(StepContext& c) override {
        if (m_stop.load()) return;  // an earlier error: the loop stops before the next step
        py::gil_scoped_acquire gil;
        auto lent = std::make_unique<PyEvaluation>();
        lent->e = &c.trainer.evaluation();
        py::object ev = py::cast(std::move(lent));
        StepInfo s{c.t,
                   c.to,
                   c.stats.loss,
                   c.stats.accuracy,
                   c.stats.grad_norm,
                   adopt(Vector(c.theta)),
                   adopt(Vector(c.next_theta)),
                   ev};
        try {
            m_fn(s);
        } catch (py::error_already_set& e) {
            m_error.emplace(std::move(e));
            m_stop = true;
        }
        ev.cast<PyEvaluation&>().e = nullptr;  // the trainer's Evaluation moves on: no dangling
    }

private:
    py::function m_fn;
    std::atomic<bool>& m_stop;
    std::optional<py::error_already_set>& m_error;
};

struct TrainResult {
    std::string path, status;
    Index step = 0;
    py::array theta;
};

struct TrainArgs {
    std::string out;
    TrainConfig config;
    InlineAnalyses analyses;
    bool resume = false, force = false;
    Index steps = -1;  // resume: new end (-1 keeps the run's)
    std::string data_dir, command_line;
};

TrainResult train(TrainArgs a, std::optional<py::function> callback) {
    std::optional<RunWriter> writer;
    Vector theta;
    Index from = 0;
    TrainConfig config;
    InlineAnalyses inline_a;
    std::shared_ptr<const Dataset> data;
    {
        py::gil_scoped_release nogil;
        if (a.resume) {
            writer.emplace(RunWriter::resume(a.out));
            config = writer->config();
            inline_a = read_inline_settings(writer->file(), config);
            if (a.steps >= 0) config.steps = a.steps;
            from = writer->resume_step();
            theta = writer->resume_theta();
            if (config.steps < from)
                throw Error("steps " + std::to_string(config.steps) + ": " + a.out + " already holds theta at step " +
                            std::to_string(from));
        } else {
            config = a.config;
            inline_a = a.analyses;
            link_inline_analyses(inline_a, config);
            check_spectrum_options(inline_a.spectrum.options, config.architecture().num_params());
            if (inline_a.spectrum.every > 0 && config.batch > 0)
                throw Error("spectrum: the in-line spectrum is of the full-batch loss; use batch=0");
            if (inline_a.perturbation.enabled() && !inline_a.lyapunov.enabled())
                throw Error("perturbation: needs Lyapunov vectors (it starts along the first tangent vector)");
            check_output_path(a.out, a.force, "out");
        }
        data = std::make_shared<const Dataset>(load_config_data(config, a.data_dir));
    }
    std::unique_ptr<Trainer> trainer;
    {
        py::gil_scoped_release nogil;
        trainer = std::make_unique<Trainer>(config, data);  // checks lr, weight_decay, batch, naming them
    }
    std::atomic<bool> stop = false;
    std::optional<py::error_already_set> error;
    auto analyses = make_inline_analyses(inline_a);
    if (callback) {
        // before the perturbed trajectory, which moves the trainer to theta' (it must come last)
        auto at = analyses.end();
        if (inline_a.perturbation.enabled()) --at;
        analyses.insert(at, std::make_unique<CallbackPlugin>(*callback, stop, error));
    }
    if (!a.resume) {
        theta = initial_theta(config);
        py::gil_scoped_release nogil;
        start_analyses(pointers(analyses), 0, theta);  // its refusals before the file exists
        writer.emplace(
            RunWriter::create(a.out, config, a.command_line, [&](h5::File& f) { write_inline_settings(f, inline_a); }));
    }
    DriveOptions d;
    d.from = from;
    d.to = config.steps;
    d.resumed = a.resume;
    d.save_theta_every = config.save_theta_every;
    d.stop = &stop;
    d.on_step = [&](Index, const StepStats&) {
        if (stop.load()) return;
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) {  // Ctrl-C: stop cleanly before the next step, then raise it
            error.emplace();
            stop = true;
        }
    };
    DriveResult r;
    {
        py::gil_scoped_release nogil;
        writer->begin(pointers(analyses), theta);
        r = drive(*trainer, writer->file(), pointers(analyses), theta, d, &*writer);
        writer.reset();  // closes the file: open_run() and tdyn info can read it at once
    }
    if (error) {
        error->restore();
        error.reset();
        throw py::error_already_set();
    }
    return {a.out, to_string(r.status), r.step, adopt(std::move(r.theta))};
}

}  // namespace

}  // namespace tdyn::python

PYBIND11_MODULE(_tdyn, m) {
    using namespace tdyn;
    using namespace tdyn::python;
    m.doc() = "tdyn: gradients, Hessian-vector products, eigenvalues and training runs (C++ library bindings)";
    m.attr("__version__") = TDYN_VERSION;

    // tdyn::Error (and h5::DiskFull, derived from it) -> tdyn.Error, a ValueError with the one-line message
    py::register_exception<Error>(m, "Error", PyExc_ValueError);

    // -- data
    py::class_<Data>(m, "Data", "A data set: X [k, d] (samples are rows) and targets T [k, c], owned by tdyn.")
        .def(py::init(
                 [](const py::array& X, const py::array& T, const std::string& name) { return make_data(X, T, name); }),
             py::arg("X"), py::arg("T"), py::arg("name") = "array",
             "Copies X and T (float64, C order, finite) once; the arrays may change afterwards.")
        .def_property_readonly(
            "X", [](py::object self) { return view(self.cast<Data&>().X(), self); },
            "X [k, d], a read-only view (no copy; for pixel data, loaded from IDX or uint8 files, a float64 "
            "pixel / 255 made on first access and kept)")
        .def_property_readonly(
            "T", [](py::object self) { return view(self.cast<Data&>().d->T, self); },
            "T [k, c], a read-only view (no copy)")
        .def_property_readonly("name", [](const Data& d) { return d.d->name; })
        .def_property_readonly("samples", [](const Data& d) { return d.d->samples(); })
        .def("__len__", [](const Data& d) { return d.d->samples(); })
        .def("__repr__", [](const Data& d) {
            return "tdyn.Data('" + d.d->name + "', k=" + std::to_string(d.d->X.rows()) +
                   ", d=" + std::to_string(d.d->X.cols()) + ", c=" + std::to_string(d.d->T.cols()) + ")";
        });
    m.def(
        "_load_data",
        [](const std::string& name, Index samples, const std::string& split, const std::string& dir, Index classes) {
            if (split != "train" && split != "test")
                throw Error("split: expected train or test, found '" + split + "'");
            if (samples < 0) throw Error("samples: must be >= 0 (0 = all), found " + std::to_string(samples));
            py::gil_scoped_release nogil;
            return Data{
                std::make_shared<const Dataset>(load_dataset(name, data_dir(dir), samples, classes, split == "test"))};
        },
        py::arg("name"), py::arg("samples"), py::arg("split"), py::arg("data_dir"), py::arg("classes"));

    // -- network
    py::class_<Architecture>(m, "Network", "An MLP: widths, hidden activation, output and loss; the flat theta layout.")
        .def(py::init([](const std::string& arch, const std::string& activation, const std::string& output) {
                 return Architecture::parse(arch, parse_activation(activation), parse_output(output));
             }),
             py::arg("arch") = "784-50-10", py::arg("activation") = "sigmoid", py::arg("output") = "softmax-ce")
        .def_property_readonly("widths", [](const Architecture& a) { return a.widths; })
        .def_property_readonly("num_params", &Architecture::num_params, "P")
        .def_property_readonly("activation", [](const Architecture& a) { return to_string(a.hidden); })
        .def_property_readonly("output", [](const Architecture& a) { return to_string(a.output); })
        .def(
            "init", [](const Architecture& a, std::uint64_t seed) { return adopt(init_params(a, seed)); },
            py::arg("seed") = 0, "theta_0 as tdyn train --seed makes it (PyTorch's Linear default)")
        .def(
            "layers",
            [](const Architecture& a, const py::array& theta) {
                const double* p =
                    vector_arg(theta, "theta", a.num_params(), "the parameters of " + a.to_string()).data();
                py::list out;
                const auto s = py::ssize_t(sizeof(double));
                for (Index l = 1; l <= a.layers(); ++l) {
                    const Index n0 = a.widths[l - 1], n1 = a.widths[l];
                    py::array W({n0, n1}, {s * n1, s}, p + a.weight_offset(l), theta);
                    py::array b({n1}, {s}, p + a.bias_offset(l), theta);
                    out.append(py::make_tuple(W, b));
                }
                return out;
            },
            py::arg("theta"), "[(W1, b1), (W2, b2), ...]: views into theta (no copy), W_l of shape [n_{l-1}, n_l]")
        .def("__str__", &Architecture::to_string)
        .def("__repr__", [](const Architecture& a) {
            return "tdyn.Network('" + a.to_string() + "', activation='" + to_string(a.hidden) + "', output='" +
                   to_string(a.output) + "')";
        });

    // -- evaluation
    py::class_<PyEvaluation>(m, "Evaluation",
                             "The network at theta on the data: one forward pass, then loss, gradient and products "
                             "with the Hessian H of L + weight_decay/2 |theta|^2.")
        .def(py::init(&make_evaluation), py::arg("network"), py::arg("data"), py::arg("theta"),
             py::arg("weight_decay") = 0.0, py::arg("precision") = "f64", py::arg("x_path") = "auto")
        .def(
            "reset",
            [](PyEvaluation& p, const py::array& theta) {
                Evaluation& e = p.get();
                const Vector th =
                    vector_arg(theta, "theta", e.num_params(), "the parameters of " + e.arch().to_string());
                p.released([&](Evaluation& ev) { ev.reset(th); }, false);
            },
            py::arg("theta"), "Moves to a new theta (one forward pass, buffers reused).")
        .def_property_readonly(
            "loss", [](PyEvaluation& p) { return p.get().loss(); }, "L(theta) + weight_decay/2 |theta|^2")
        .def_property_readonly("data_loss", [](PyEvaluation& p) { return p.get().data_loss(); })
        .def_property_readonly("accuracy", [](PyEvaluation& p) { return p.get().accuracy(); })
        .def_property_readonly("num_params", [](PyEvaluation& p) { return p.get().num_params(); })
        .def_property_readonly("samples", [](PyEvaluation& p) { return p.get().global_samples(); })
        .def_property_readonly("weight_decay", [](PyEvaluation& p) { return p.get().weight_decay(); })
        .def_property_readonly(
            "theta", [](PyEvaluation& p) { return adopt(Vector(p.get().theta())); }, "theta (a copy)")
        .def_property_readonly(
            "output", [](PyEvaluation& p) { return adopt(RowMatrix(p.get().output())); },
            "Y [k, c], the network's outputs (a copy)")
        .def(
            "gradient",
            [](PyEvaluation& p) {
                Vector g;
                p.released([&](Evaluation& e) { g = e.gradient(); });
                return adopt(std::move(g));
            },
            "grad L(theta) + weight_decay theta, [P] (a new array)")
        .def(
            "input_gradient",
            [](PyEvaluation& p) {
                RowMatrix g;
                p.released([&](Evaluation& e) { g = e.input_gradient(); });
                return adopt(std::move(g));
            },
            "dL/dX [k, d]")
        .def(
            "hvp",
            [](PyEvaluation& p, const py::array& V) {
                Evaluation& e = p.get();
                const auto v = block_arg(V, "V", e.num_params());
                auto out = like_block(V);
                auto o = block_out(out, e.num_params());
                p.released([&](Evaluation& ev) { ev.hessian_times(v, o); });
                return out;
            },
            py::arg("V"),
            "H V for V [P] or [P, M] (Fortran order, one vector per column); same shape, a new array. No copy of V.")
        .def(
            "gnvp",
            [](PyEvaluation& p, const py::array& V) {
                Evaluation& e = p.get();
                const auto v = block_arg(V, "V", e.num_params());
                auto out = like_block(V);
                auto o = block_out(out, e.num_params());
                p.released([&](Evaluation& ev) { ev.gauss_newton_times(v, o); });
                return out;
            },
            py::arg("V"), "G V with the Gauss-Newton matrix; shapes as hvp")
        .def(
            "jvp",
            [](PyEvaluation& p, const py::array& V, double lr) {
                Evaluation& e = p.get();
                if (!(lr > 0) || !std::isfinite(lr))
                    throw Error("lr: the learning rate must be a positive number, found " + format_number(lr));
                const auto v = block_arg(V, "V", e.num_params());
                Matrix JV;
                p.released([&](Evaluation& ev) {
                    const HessianOp H(ev);
                    JV = JacobianOp(H, lr) * v;  // J V = V - alpha H V
                });
                py::array out = adopt(std::move(JV));
                return V.ndim() == 1 ? out.attr("reshape")(V.shape(0)).cast<py::array>() : out;
            },
            py::arg("V"), py::arg("lr"), "J V = V - lr H V, the update Jacobian of gradient descent; shapes as hvp");

    // The C++ call itself, for the memory test and the benchmark's yardstick: H V into a caller-owned
    // block (no allocation here), and the same timed in C++ without Python in the loop.
    m.def(
        "_hessian_times",
        [](PyEvaluation& p, const py::array& V, py::array_t<double> out) {
            Evaluation& e = p.get();
            const auto v = block_arg(V, "V", e.num_params());
            if (out.ndim() != V.ndim() || out.shape(0) != V.shape(0) || (V.ndim() == 2 && out.shape(1) != V.shape(1)) ||
                !(out.flags() & py::array::f_style) || !out.writeable())
                throw Error("out: expected a writeable float64 array of V's shape in Fortran order");
            auto o = block_out(out, e.num_params());
            p.released([&](Evaluation& ev) { ev.hessian_times(v, o); });
        },
        py::arg("evaluation"), py::arg("V"), py::arg("out"));
    m.def(
        "_time_hessian_times",
        [](PyEvaluation& p, const py::array& V, int repeats) {
            Evaluation& e = p.get();
            const auto v = block_arg(V, "V", e.num_params());
            Matrix out(v.rows(), v.cols());
            std::vector<double> seconds;
            p.released([&](Evaluation& ev) {
                for (int r = 0; r < repeats; ++r) {
                    const auto t0 = std::chrono::steady_clock::now();
                    ev.hessian_times(v, out);
                    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                }
            });
            return seconds;
        },
        py::arg("evaluation"), py::arg("V"), py::arg("repeats"));

    // -- eigenvalues
    py::class_<Eigenpairs>(m, "Eigenpairs",
                           "values, vectors [P, K], residuals ||H u - lambda u||, hvps (unpacks as these four); "
                           "converged, status")
        .def_readonly("values", &Eigenpairs::values)
        .def_readonly("vectors", &Eigenpairs::vectors)
        .def_readonly("residuals", &Eigenpairs::residuals)
        .def_readonly("hvps", &Eigenpairs::hvps)
        .def_readonly("converged", &Eigenpairs::converged)
        .def_readonly("status", &Eigenpairs::status)
        .def("__iter__",
             [](const Eigenpairs& r) { return py::iter(py::make_tuple(r.values, r.vectors, r.residuals, r.hvps)); })
        .def("__repr__", [](const Eigenpairs& r) {
            return "tdyn.Eigenpairs(values=" + std::string(py::repr(r.values)) + ", hvps=" + std::to_string(r.hvps) +
                   ", converged=" + (r.converged ? "True" : "False") + ", status='" + r.status + "')";
        });
    m.def("eigenvalues", &eigenvalues, py::arg("evaluation"), py::arg("k") = 3, py::arg("which") = "top",
          py::arg("tol") = py::none(), py::arg("solver") = "lanczos", py::arg("max_iter") = 1000, py::arg("krylov") = 0,
          py::arg("start") = py::none(),
          "K eigenpairs of H at one end of its spectrum (Spectra, matrix-free): top = largest, descending; "
          "bottom = smallest, ascending. tol: relative (default the library's, 1e-6).");

    // -- run files
    py::class_<Run>(m, "Run", "A tdyn run file, open for reading (SWMR: works while a run writes it).")
        .def_property_readonly("path", [](Run& r) { return r.r().path(); })
        .def_property_readonly("config", [](Run& r) { return config_dict(r.r().info().config); })
        .def_property_readonly("status", [](Run& r) { return to_string(r.r().info().status); })
        .def_property_readonly("last_step", [](Run& r) { return r.r().info().last_step; })
        .def_property_readonly("theta_steps", [](Run& r) { return r.r().info().theta_steps; })
        .def_property_readonly("command_line", [](Run& r) { return r.r().info().command_line; })
        .def_property_readonly("network", [](Run& r) { return r.r().info().config.architecture(); })
        .def(
            "theta",
            [](Run& r, Index t) {
                const auto& s = r.r().info().theta_steps;
                if (std::find(s.begin(), s.end(), t) != s.end()) return adopt(r.r().stored_theta(t));
                Vector th;
                Trainer& tr = r.replayer();
                {
                    py::gil_scoped_release nogil;
                    th = r.r().theta(t, tr);
                }
                return adopt(std::move(th));
            },
            py::arg("step"), "theta at a step: stored, or replayed from the nearest stored step before it")
        .def_property_readonly(
            "trajectory", [](Run& r) { return read_group(r.r().file(), "/trajectory", {"theta"}); },
            "/trajectory: step, loss, accuracy, grad_norm, theta_step (theta: use theta(step))")
        .def_property_readonly(
            "lyapunov", [](Run& r) { return read_group(r.r().file(), "/lyapunov"); },
            "/lyapunov as a dict of arrays, or None")
        .def_property_readonly(
            "spectrum", [](Run& r) { return read_group(r.r().file(), "/spectrum"); },
            "/spectrum as a dict of arrays, or None")
        .def_property_readonly(
            "growth", [](Run& r) { return read_group(r.r().file(), "/growth"); },
            "/growth (written by tdyn growth) as a dict of arrays, or None")
        .def("window_growth", &run_window_growth, py::arg("start"), py::arg("window"), py::arg("vectors") = 1,
             py::arg("block") = 0, py::arg("passes") = 200, py::arg("tol") = 1e-6, py::arg("seed") = py::none(),
             "The most a perturbation made at step start can grow over the next `window` steps: the top "
             "`vectors` singular values of J(start+window-1) .. J(start), J(t) = I - lr H(theta_t), as tdyn "
             "growth computes them for one window (thetas replayed from the run; nothing is written). "
             "tol: per step; block 0 = 2 x vectors; seed: the start block's, default the run's (as tdyn growth).")
        .def(
            "group", [](Run& r, const std::string& g) { return read_group(r.r().file(), g); }, py::arg("name"),
            "any group of the file (e.g. /spectrum_k3_top) as a dict of arrays, or None")
        .def(
            "data", [](Run& r) { return Data{r.dataset()}; }, "the run's data set (loaded once)")
        .def(
            "evaluation",
            [](Run& r, Index t) {
                const TrainConfig& c = r.r().info().config;
                Vector th;
                const auto& s = r.r().info().theta_steps;
                if (std::find(s.begin(), s.end(), t) != s.end()) th = r.r().stored_theta(t);
                else {
                    Trainer& tr = r.replayer();
                    py::gil_scoped_release nogil;
                    th = r.r().theta(t, tr);
                }
                return make_evaluation(c.architecture(), Data{r.dataset()}, adopt(std::move(th)), c.weight_decay,
                                       to_string(c.precision), to_string(c.x_path));
            },
            py::arg("step"), "the Evaluation at theta(step) on the run's full data set, with its weight decay")
        .def("close",
             [](Run& r) {
                 r.trainer.reset();
                 r.reader.reset();
             })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](Run& r, py::args) {
            r.trainer.reset();
            r.reader.reset();
        });
    m.def(
        "open_run",
        [](const std::string& path, const std::string& data_dir) {
            auto r = std::make_unique<Run>();
            r->reader = std::make_unique<RunReader>(path);
            r->data_dir = data_dir;
            return r;
        },
        py::arg("path"), py::arg("data_dir") = "", "Opens a run file (data_dir: where replay finds the data)");

    // -- training
    py::class_<StepInfo>(m, "Step", "What a train() callback sees at step t")
        .def_readonly("t", &StepInfo::t)
        .def_readonly("to", &StepInfo::to, "last step of the run")
        .def_readonly("loss", &StepInfo::loss)
        .def_readonly("accuracy", &StepInfo::accuracy)
        .def_readonly("grad_norm", &StepInfo::grad_norm)
        .def_readonly("theta", &StepInfo::theta, "theta_t (a copy)")
        .def_readonly("next_theta", &StepInfo::next_theta, "theta_{t+1} (a copy; theta_t at the last step)")
        .def_readonly("evaluation", &StepInfo::evaluation,
                      "the step's own Evaluation at theta_t, valid during the callback only");
    py::class_<TrainResult>(m, "TrainResult")
        .def_readonly("path", &TrainResult::path)
        .def_readonly("status", &TrainResult::status, "completed | diverged | interrupted")
        .def_readonly("step", &TrainResult::step, "last step evaluated")
        .def_readonly("theta", &TrainResult::theta, "theta at that step")
        .def("__repr__", [](const TrainResult& r) {
            return "tdyn.TrainResult('" + r.path + "', status='" + r.status + "', step=" + std::to_string(r.step) + ")";
        });
    m.def(
        "_train",
        [](const std::string& out, py::dict c, py::dict an, bool resume, Index steps, bool force,
           const std::string& data_dir, const std::string& command_line, std::optional<py::function> callback) {
            TrainArgs a;
            a.out = out;
            a.resume = resume;
            a.steps = steps;
            a.force = force;
            a.data_dir = data_dir;
            a.command_line = command_line;
            if (!resume) {
                TrainConfig& k = a.config;
                k.data = c["data"].cast<std::string>();
                k.samples = c["samples"].cast<Index>();
                k.arch = Architecture::parse(c["arch"].cast<std::string>()).to_string();
                k.activation = parse_activation(c["activation"].cast<std::string>());
                k.output = parse_output(c["output"].cast<std::string>());
                k.lr = c["lr"].cast<double>();
                k.weight_decay = c["weight_decay"].cast<double>();
                k.steps = c["steps"].cast<Index>();
                k.batch = c["batch"].cast<Index>();
                k.seed = c["seed"].cast<std::uint64_t>();
                k.init = c["init"].cast<std::string>();
                k.save_theta_every = c["save_theta_every"].cast<Index>();
                k.precision = parse_precision(c["precision"].cast<std::string>());
                k.x_path = parse_xpath(c["x_path"].cast<std::string>());
                if (k.steps < 0) throw Error("steps: must be >= 0, found " + std::to_string(k.steps));
                if (k.save_theta_every < 1)
                    throw Error("save_theta_every: must be >= 1, found " + std::to_string(k.save_theta_every));
                if (k.samples < 0) throw Error("samples: must be >= 0 (0 = all), found " + std::to_string(k.samples));
                InlineAnalyses& x = a.analyses;
                x.spectrum.every = an["spectrum_every"].cast<Index>();
                x.spectrum.options.eig.eigs = an["eigs"].cast<Index>();
                x.spectrum.options.ends = parse_ends(an["which"].cast<std::string>());
                x.lyapunov.tangent.vectors = an["lyapunov"].cast<Index>();
                x.lyapunov.tangent.qr_every = an["qr_every"].cast<Index>();
                x.lyapunov.tangent.warmup = an["warmup"].cast<Index>();
                x.perturbation.eps = an["perturbation"].cast<double>();
                if (x.spectrum.every < 0) throw Error("Spectrum.every: must be >= 0");
                if (x.lyapunov.tangent.vectors < 0) throw Error("Lyapunov.vectors: must be >= 0");
                if (x.lyapunov.tangent.qr_every < 1) throw Error("Lyapunov.qr_every: must be >= 1");
                if (x.lyapunov.tangent.warmup < 0 || x.lyapunov.tangent.warmup % x.lyapunov.tangent.qr_every != 0)
                    throw Error("Lyapunov.warmup: must be a multiple of qr_every, >= 0");
                if (!(x.perturbation.eps >= 0) || !std::isfinite(x.perturbation.eps))
                    throw Error("Lyapunov.perturbation: EPS must be a finite number >= 0");
            }
            return train(std::move(a), std::move(callback));
        },
        py::arg("out"), py::arg("config"), py::arg("analyses"), py::arg("resume"), py::arg("steps"), py::arg("force"),
        py::arg("data_dir"), py::arg("command_line"), py::arg("callback"));
}
