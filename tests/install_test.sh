#!/usr/bin/env bash
# Installs the build tree into a temporary prefix and uses it as a C programmer
# would: pkg-config only, then CMake's find_package. Also checks that the shared
# library has a versioned SONAME and exports nothing but dsi_* symbols.
set -euo pipefail
BUILD=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null
PC=$(dirname "$(find "$TMP/prefix" -name dsinfer.pc | head -1)")
LIBDIR=$(PKG_CONFIG_PATH=$PC pkg-config --variable=libdir dsinfer)

SO=$(readlink -f "$LIBDIR/libdsinfer.so")
readelf -d "$SO" | grep -q 'SONAME.*libdsinfer\.so\.[0-9]' || { echo "no versioned SONAME in $SO"; exit 1; }
bad=$(nm -D --defined-only "$SO" | awk '{print $3}' | grep -v '^dsi_' || true)
[ -z "$bad" ] || { echo "exported symbols that are not dsi_*:"; echo "$bad" | head; exit 1; }

${CC:-cc} -std=c99 -Wall -Wextra -Werror "$SRC/samples/simple.c" -o "$TMP/simple" \
  $(PKG_CONFIG_PATH=$PC pkg-config --cflags --libs dsinfer) -Wl,-rpath,"$LIBDIR"
"$TMP/simple" "$SRC/tests/data/golden/tiny-bf16" 8

mkdir -p "$TMP/cmake-user"
cat > "$TMP/cmake-user/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.22)
project(user C)
find_package(dsinfer REQUIRED)
add_executable(user main.c)
target_link_libraries(user PRIVATE dsinfer::dsinfer)
CM
cat > "$TMP/cmake-user/main.c" <<'C'
#include <dsinfer.h>
#include <stdio.h>
int main(void) { printf("%s\n", dsi_version()); return dsi_version_number() == DSI_VERSION_NUMBER ? 0 : 1; }
C
cmake -S "$TMP/cmake-user" -B "$TMP/cmake-user/build" -DCMAKE_PREFIX_PATH="$TMP/prefix" \
  -DCMAKE_BUILD_RPATH="$LIBDIR" >/dev/null
cmake --build "$TMP/cmake-user/build" >/dev/null
"$TMP/cmake-user/build/user"
echo "install test passed"
