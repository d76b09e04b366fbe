// Reading a caller's params struct: it starts with `struct_size`, fields are only ever
// appended, so a caller built against an older (shorter) version still works and the
// fields it does not know keep their defaults.
#pragma once

#include "common/error.h"

#include <cstddef>
#include <cstring>

namespace dsi {

// `v1_size` is the size of the first released version of P (offsetof its last v1
// field + that field's size); `name` is the struct's name without "_params".
template <class P>
P read_params(const P *given, P defaults, size_t v1_size, const char *name) {
    if (!given) return defaults;
    if (given->struct_size < v1_size || given->struct_size > sizeof(P))
        fail(DSI_ERR_INVALID_ARGUMENT,
             "%s_params.struct_size is %zu, expected %zu to %zu: initialise the struct with %s_default_params()",
             name, given->struct_size, v1_size, sizeof(P), name);
    std::memcpy(static_cast<void *>(&defaults), given, given->struct_size);
    defaults.struct_size = sizeof(P);
    return defaults;
}

// The int a caller stored in an enum field or parameter. C callers may pass any int; in
// C++ loading an enum object whose value lies outside the enum's range is undefined, so
// the bytes are read as int instead.
template <class E>
int enum_value(const E &e) {
    static_assert(sizeof(E) == sizeof(int), "C enums are int-sized here");
    int v;
    std::memcpy(&v, &e, sizeof v);
    return v;
}

}  // namespace dsi
