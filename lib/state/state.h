// Saved state of a context (lib/state/state.fbs, Flatbuffers): save to bytes, load
// after the Flatbuffers verifier and the model identity have accepted them.
#pragma once

#include "dsinfer.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dsi {

class Checkpoint;

// 16 bytes naming a model: two independent 64-bit hashes over config.json's bytes and
// every tensor's name, dtype and shape (not the weights' values: hashing hundreds of
// GB at load would cost more than it protects against).
using ModelIdentity = std::array<uint8_t, 16>;
ModelIdentity model_identity(const std::string &config_json, const Checkpoint &checkpoint);

// ctx must be locked by the caller; sampler may be NULL.
std::vector<uint8_t> save_state(dsi_context *ctx, const dsi_sampler *sampler);

// Replaces ctx's tokens, caches and logits (and sampler's state, when given) with a
// saved state. Checks everything before changing anything: a buffer that fails the
// verifier, is truncated or has inconsistent sizes is DSI_ERR_FORMAT, one from a newer
// schema is DSI_ERR_FORMAT, one from another model is DSI_ERR_CONFIG.
void load_state(dsi_context *ctx, const uint8_t *data, size_t size, dsi_sampler *sampler);

}  // namespace dsi
