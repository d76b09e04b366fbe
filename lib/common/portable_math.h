// Elementary functions whose results are the same bits on every platform with IEEE-754
// binary64 doubles (no excess precision), unlike the C library's, which differ between
// implementations in the last place. The sampler uses them so that a seed picks the same
// token everywhere. Built with -ffp-contract=off: a fused multiply-add would round once
// where other machines round twice.
#pragma once

namespace dsi {

// e^x, within 1 ulp of the exact value; +inf above ~709.78, 0 below ~-745.13, NaN for NaN.
double portable_exp(double x);

}  // namespace dsi
