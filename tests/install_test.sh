#!/usr/bin/env bash
# Installs the build tree into a temporary prefix and uses it as a C programmer
# would: pkg-config only, then CMake's find_package; then moves the installed tree and
# builds against the moved copy. Also checks that the shared library has a versioned
# SONAME, exports nothing but dsi_* symbols, all under the version node DSINFER_0, and
# that the .pc file's flags are normalised (system paths dropped for prefix /usr).
set -euo pipefail
BUILD=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null
PC=$(dirname "$(find "$TMP/prefix" -name dsinfer.pc | head -1)")
LIBDIR=$(PKG_CONFIG_PATH=$PC pkg-config --variable=libdir dsinfer)

SO=$(readlink -f "$LIBDIR/libdsinfer.so")
readelf -d "$SO" | grep -q 'SONAME.*libdsinfer\.so\.[0-9]' || { echo "no versioned SONAME in $SO"; exit 1; }
bad=$(nm -D --defined-only "$SO" | awk '{print $3}' | grep -v '^dsi_.*@@DSINFER_0$' | grep -vx 'DSINFER_0' || true)
[ -z "$bad" ] || { echo "exported symbols that are not dsi_*@@DSINFER_0:"; echo "$bad" | head; exit 1; }

# Normalised flags: no "..", and for prefix /usr pkgconf drops -I/usr/include entirely.
flags=$(PKG_CONFIG_PATH=$PC pkg-config --cflags --libs dsinfer)
case "$flags" in *..*) echo "pkg-config flags are not normalised: $flags"; exit 1;; esac
DESTDIR="$TMP/stage" cmake --install "$BUILD" --prefix /usr >/dev/null
STAGED_PC=$(dirname "$(find "$TMP/stage" -name dsinfer.pc | head -1)")
grep -qx 'prefix=/usr' "$STAGED_PC/dsinfer.pc" || { echo "staged .pc has no prefix=/usr"; exit 1; }
[ -z "$(PKG_CONFIG_PATH=$STAGED_PC pkg-config --cflags dsinfer | tr -d ' ')" ] ||
  { echo "pkg-config keeps a system include path: $(PKG_CONFIG_PATH=$STAGED_PC pkg-config --cflags dsinfer)"; exit 1; }

${CC:-cc} -std=c99 -Wall -Wextra -Werror "$SRC/samples/simple.c" -o "$TMP/simple" \
  $(PKG_CONFIG_PATH=$PC pkg-config --cflags --libs dsinfer) -Wl,-rpath,"$LIBDIR"
"$TMP/simple" "$SRC/tests/data/golden/tiny-bf16" 8
${CC:-cc} -std=c99 -Wall -Wextra -Werror "$SRC/samples/api_tour.c" -o "$TMP/api_tour" \
  $(PKG_CONFIG_PATH=$PC pkg-config --cflags --libs dsinfer) -Wl,-rpath,"$LIBDIR"
"$TMP/api_tour" "$SRC/tests/data/golden/tiny-fp8"

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

# The installed tree moved elsewhere: pkg-config with the new prefix, CMake as is.
mv "$TMP/prefix" "$TMP/moved"
MOVED_PC=${PC/$TMP\/prefix/$TMP\/moved}
MOVED_LIB=${LIBDIR/$TMP\/prefix/$TMP\/moved}
${CC:-cc} -std=c99 -Wall -Wextra -Werror "$SRC/samples/simple.c" -o "$TMP/simple-moved" \
  $(PKG_CONFIG_PATH=$MOVED_PC pkg-config --define-variable=prefix="$TMP/moved" --cflags --libs dsinfer) \
  -Wl,-rpath,"$MOVED_LIB"
"$TMP/simple-moved" "$SRC/tests/data/golden/tiny-bf16" 4
rm -rf "$TMP/cmake-user/build"
cmake -S "$TMP/cmake-user" -B "$TMP/cmake-user/build" -DCMAKE_PREFIX_PATH="$TMP/moved" \
  -DCMAKE_BUILD_RPATH="$MOVED_LIB" >/dev/null
cmake --build "$TMP/cmake-user/build" >/dev/null
"$TMP/cmake-user/build/user"
echo "install test passed"
