#include "common/portable_math.h"

#include <cmath>

namespace dsi {

// x = k*ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split so that k*kLn2Hi is exact), then
// e^r by its Taylor series to r^13 (the remainder is below 2^-60 relative there) and
// e^x = 2^k * e^r by ldexp, which is exact or rounds once (subnormal results).
double portable_exp(double x) {
    if (std::isnan(x)) return x;
    if (x > 709.782712893384) return INFINITY;
    if (x < -745.1332191019412) return 0.0;
    constexpr double kInvLn2 = 1.4426950408889634;
    constexpr double kLn2Hi = 6.93147180369123816490e-01;  // the top 32 bits of ln 2
    constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
    const double k = std::floor(x * kInvLn2 + 0.5);
    const double r = (x - k * kLn2Hi) - k * kLn2Lo;
    double p = 1.0 / 6227020800.0;  // 1/13!
    constexpr double kInvFactorial[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                        1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                                        1.0 / 24.0,        1.0 / 6.0,        1.0 / 2.0,       1.0,
                                        1.0};
    for (double c : kInvFactorial) p = p * r + c;
    return std::ldexp(p, static_cast<int>(k));
}

}  // namespace dsi
