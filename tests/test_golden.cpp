// labels: cpu
// The CPU engine against the golden data of an independent implementation
// (transformers 5.17, float64): tests/data/golden/README.md. Both cases on both
// checkpoints: every layer's output, the indexer's top-k sets, the experts of every
// token, the logits, and 24 greedy steps by KV-cached decode. Tolerances and their
// reasons: tests/reference_check.h.
#include "reference_check.h"

namespace {

const std::string kGolden = std::string(DSI_TEST_DATA_DIR) + "/golden";

}  // namespace

TEST_CASE("golden prefill: layers, indexer top-k, experts, logits") {
    for (const std::string model : {"tiny-bf16", "tiny-fp8"})
        for (const std::string cs : {"case0", "case1"}) {
            CAPTURE(model);
            CAPTURE(cs);
            refcheck::check_prefill(kGolden + "/" + model, refcheck::Reference(kGolden + "/tiny-golden.safetensors", cs + "."),
                                    model);
        }
}

TEST_CASE("golden greedy continuation by KV-cached decode") {
    for (const std::string model : {"tiny-bf16", "tiny-fp8"})
        for (const std::string cs : {"case0", "case1"}) {
            CAPTURE(model);
            CAPTURE(cs);
            refcheck::check_greedy(kGolden + "/" + model, refcheck::Reference(kGolden + "/tiny-golden.safetensors", cs + "."),
                                   model);
        }
}
