#include "tdyn/network.hpp"
#include "tdyn/activation.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

namespace tdyn {
namespace {

TEST(Architecture, SeedNetworkHas39760Parameters) {
    const Architecture a = Architecture::parse("784-50-10");
    EXPECT_EQ(a.num_params(), 784 * 50 + 50 + 50 * 10 + 10);
    EXPECT_EQ(a.num_params(), 39760);
    // theta = (W1 row-major [784 x 50], b1, W2 row-major [50 x 10], b2)
    EXPECT_EQ(a.weight_offset(1), 0);
    EXPECT_EQ(a.bias_offset(1), 39200);
    EXPECT_EQ(a.weight_offset(2), 39250);
    EXPECT_EQ(a.bias_offset(2), 39750);
    EXPECT_EQ(a.to_string(), "784-50-10");
    EXPECT_EQ(Architecture::parse("784-100-100-10").num_params(), 785 * 100 + 101 * 100 + 101 * 10);
    EXPECT_EQ(Architecture::parse("10-1").num_params(), 11);
}

TEST(Architecture, RowMajorViewsMatchTheFlatLayout) {
    const Architecture a = Architecture::parse("3-2-2");
    Vector theta = Vector::LinSpaced(a.num_params(), 0, double(a.num_params() - 1));
    EXPECT_EQ(weight(a, theta, 1)(1, 0), 2.0);  // W1[1][0] is element 1 * 2 + 0
    EXPECT_EQ(bias(a, theta, 1)[1], 7.0);
    EXPECT_EQ(weight(a, theta, 2)(1, 1), 11.0);
    EXPECT_EQ(bias(a, theta, 2)[0], 12.0);
}

TEST(Architecture, MalformedTextGivesOneClearError) {
    for (const char* bad : {"784--10", "0-10", "10", "", "a-b", "784-50-", "-784-10", "784-5x-10", "99999999-10"}) {
        try {
            Architecture::parse(bad);
            FAIL() << "accepted '" << bad << "'";
        } catch (const Error& e) {
            const std::string msg = e.what();
            EXPECT_EQ(msg.rfind("arch: ", 0), 0u) << msg;  // the parameter; tdyn shows it as --arch
            EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << msg;
        }
    }
    EXPECT_THROW(parse_activation("gelu"), Error);
    EXPECT_THROW(parse_output("softmax"), Error);
    EXPECT_EQ(parse_output(to_string(Output::SigmoidMSE)), Output::SigmoidMSE);
    EXPECT_EQ(parse_activation(to_string(Activation::Softplus)), Activation::Softplus);
}

// f' and f'' against central differences of f and f' at points away from ReLU's kink.
TEST(Activation, DerivativesMatchCentralDifferences) {
    const double h = 1e-5;
    for (Activation f : test::all_activations())
        for (double a : {-3.1, -0.7, 0.2, 1.3, 4.5}) {
            const double d1 = (activate(f, a + h) - activate(f, a - h)) / (2 * h);
            const double d2 = (activate_d1(f, a + h) - activate_d1(f, a - h)) / (2 * h);
            EXPECT_NEAR(activate_d1(f, a), d1, 1e-9) << to_string(f) << " at " << a;
            EXPECT_NEAR(activate_d2(f, a), d2, 1e-9) << to_string(f) << " at " << a;
        }
    EXPECT_EQ(activate_d1(Activation::Relu, 0.0), 0.0);                // seed 003's convention
    EXPECT_NEAR(activate(Activation::Softplus, 800.0), 800.0, 1e-12);  // no overflow
}

TEST(Initialisation, SeededUniformWithinPyTorchBounds) {
    const Architecture a = Architecture::parse("784-50-10");
    const Vector t1 = init_params(a, 7), t2 = init_params(a, 7), t3 = init_params(a, 8);
    EXPECT_EQ(t1, t2);
    EXPECT_NE(t1, t3);
    const double r1 = 1 / std::sqrt(784.0), r2 = 1 / std::sqrt(50.0);
    EXPECT_LE(t1.head(39250).cwiseAbs().maxCoeff(), r1);
    EXPECT_LE(t1.tail(510).cwiseAbs().maxCoeff(), r2);
    EXPECT_GT(t1.tail(510).cwiseAbs().maxCoeff(), 0.9 * r2);
    // U(-r, r) has mean 0 and variance r^2 / 3; 39250 draws put the sample mean within ~5e-4 r.
    EXPECT_NEAR(t1.head(39250).mean() / r1, 0.0, 0.02);
    EXPECT_NEAR(t1.head(39250).squaredNorm() / 39250 / (r1 * r1), 1.0 / 3.0, 0.01);
}

// One definition, two uses: the array form of each policy (Eigen's vectorised exp, tanh, log1p)
// against the scalar functions (std::), on points across the curved range. The two libraries'
// functions differ by an ulp or so, so 1e-14 relative; the ReLU kink convention f'(0) = 0 holds
// in both forms exactly.
TEST(Activation, ArrayPoliciesMatchScalarFunctions) {
    const Eigen::ArrayXXd a = Eigen::ArrayXd::LinSpaced(41, -8.0, 8.0).replicate(1, 3);
    for (Activation f : test::all_activations())
        with_activation(f, [&](auto policy) {
            using F = decltype(policy);
            const Eigen::ArrayXXd z = F::f(a), d1 = F::d1(a, z), d2 = F::d2(a, z);
            for (Index i = 0; i < a.size(); ++i) {
                const double ai = a.data()[i];
                EXPECT_NEAR(z.data()[i], activate(f, ai), 1e-14 * (1 + std::abs(z.data()[i])))
                    << to_string(f) << " " << ai;
                EXPECT_NEAR(d1.data()[i], activate_d1(f, ai), 1e-14) << to_string(f) << " " << ai;
                EXPECT_NEAR(d2.data()[i], activate_d2(f, ai), 1e-14) << to_string(f) << " " << ai;
            }
        });
    const Eigen::ArrayXd zero = Eigen::ArrayXd::Zero(1);
    EXPECT_EQ(Relu::d1(zero, zero)[0], 0.0);
    EXPECT_EQ(activate_d1(Activation::Relu, 0.0), 0.0);
}

}  // namespace
}  // namespace tdyn
