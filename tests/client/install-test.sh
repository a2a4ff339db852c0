#!/usr/bin/env bash
# The installed library as a user meets it: `cmake --install` of the build
# dir given into a temporary prefix, then the installed example built three
# ways: with pkg-config (shared), pkg-config --static, and a CMake project
# using find_package(framebuffer-client). Each program must run (--help-less:
# it exits 2 at once on a bad PROCESSOR_TRANSPORT, which proves it loaded).
# Usage: install-test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: install-test.sh BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
ex=$prefix/share/framebuffer-client/examples/processor.c
[ -f "$ex" ] || { echo "FAIL: the example is not installed at $ex"; exit 1; }
[ -L "$prefix/lib/libframebuffer-client.so.1" ] || { echo "FAIL: no SONAME link"; exit 1; }
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc -std=c11 -Wall -Werror -o "$tmp/ex-shared" "$ex" $(pkg-config --cflags --libs framebuffer-client)
# The static library, its own dependencies shared (as Debian ships them).
cc -std=c11 -Wall -Werror -o "$tmp/ex-static" "$ex" $(pkg-config --cflags framebuffer-client) \
  "$prefix/lib/libframebuffer-client.a" $(pkg-config --libs hiredis libnats libcurl jansson) -lpthread
mkdir "$tmp/user"
cp "$ex" "$tmp/user/"
cat >"$tmp/user/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.18)
project(user-processor C)
find_package(framebuffer-client 1.0 REQUIRED)
add_executable(ex-cmake processor.c)
target_link_libraries(ex-cmake PRIVATE framebuffer-client::framebuffer-client)
add_executable(ex-cmake-static processor.c)
target_link_libraries(ex-cmake-static PRIVATE framebuffer-client::framebuffer-client-static)
CMAKE
cmake -S "$tmp/user" -B "$tmp/user/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/user/build" >/dev/null
for prog in "$tmp/ex-shared" "$tmp/ex-static" "$tmp/user/build/ex-cmake" "$tmp/user/build/ex-cmake-static"; do
  set +e
  LD_LIBRARY_PATH=$prefix/lib PROCESSOR_TRANSPORT=pigeon "$prog" 2>/dev/null
  rc=$?
  set -e
  [ "$rc" = 2 ] || { echo "FAIL: $(basename "$prog") exited $rc, not 2"; exit 1; }
done
ldd "$tmp/ex-shared" | grep -q 'libframebuffer-client.so.1 ' || { echo "FAIL: not linked to the .so.1"; exit 1; }
echo "ok: installed; the example builds with pkg-config (shared, static) and find_package (shared, static) and runs"
