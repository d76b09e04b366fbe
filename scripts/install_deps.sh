#!/usr/bin/env bash
# Installs the Debian packages dsinfer needs to build and test (Debian 12). Skips apt
# entirely when everything is already there.
set -euo pipefail
packages=(cmake g++ make pkg-config git ca-certificates
          doctest-dev libpcre2-dev nlohmann-json3-dev
          libflatbuffers-dev flatbuffers-compiler swig libreadline-dev
          libcpp-httplib-dev  # dsinfer serve (HTTP)
          chromium            # the server tests load the chat page headless
          clang libclang-rt-14-dev libomp-14-dev   # fuzzers (libFuzzer) and ThreadSanitizer
          default-jdk-headless mono-mcs mono-runtime golang-go)  # Java, C# and Go bindings
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the tokenizer test data; a Node.js from elsewhere (e.g. NodeSource)
# brings its own npm, which Debian's package would conflict with.
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "dsinfer: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
