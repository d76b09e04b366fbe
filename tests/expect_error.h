// Asserting that internal code refuses bad input with the right status and message.
#pragma once

#include <doctest/doctest.h>

#include "common/error.h"

#include <functional>
#include <string>
#include <vector>

// Runs `body`, which must throw dsi::Error with `status` and a message containing
// every one of `needles`.
inline void expect_error(const std::function<void()> &body, dsi_status status,
                         const std::vector<std::string> &needles) {
    try {
        body();
    } catch (const dsi::Error &e) {
        const std::string msg = e.what();
        INFO("message: " << msg);
        CHECK(e.status() == status);
        for (const std::string &n : needles)
            CHECK_MESSAGE(msg.find(n) != std::string::npos, "missing '" << n << "'");
        return;
    }
    FAIL("no dsi::Error thrown; expected status " << status);
}
