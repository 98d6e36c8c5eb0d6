#!/usr/bin/env bash
# Build the ns-3 reference program (benchmarks/ns3_bulk.cc), the fastest peer
# benchmarks/netstack_bench.py runs beside our stack on the same workload.
# ns-3 is Debian's libns3-dev (3.37, a release build with logging compiled
# in); when its headers are missing and we are root with apt-get, it is
# installed first.  The binary lives outside the repository (default:
# $TMPDIR/uvmloan-ns3/ns3_bulk) and is rebuilt when the source is newer.
# ns-3 is never a dependency of the library or its tests.
#
#   bash benchmarks/ns3_env.sh [BINARY]     prints the binary's path
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-${UVMLOAN_NS3_BIN:-${TMPDIR:-/tmp}/uvmloan-ns3/ns3_bulk}}"
if [ ! -e /usr/include/ns3/core-module.h ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q --no-install-recommends libns3-dev g++ >&2 \
            || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends libns3-dev g++ >&2; }
    else
        echo "ns-3 is not installed: install Debian's libns3-dev and g++ (as root: apt-get install libns3-dev g++)" >&2
        exit 1
    fi
fi
if [ ! -x "$bin" ] || [ "$here/ns3_bulk.cc" -nt "$bin" ]; then
    mkdir -p "$(dirname "$bin")"
    # -DNS3_LOG_ENABLE and no NS3_ASSERT_ENABLE: how Debian built the libraries
    # (--build-profile=release --enable-logs), so the headers agree with them.
    # Debian's ns3-*.pc files are broken, hence the explicit libraries.
    g++ -O2 -std=c++17 -DNS3_BUILD_PROFILE_RELEASE -DNS3_LOG_ENABLE "$here/ns3_bulk.cc" -o "$bin.tmp" \
        -lns3-flow-monitor -lns3-applications -lns3-point-to-point -lns3-internet \
        -lns3-traffic-control -lns3-bridge -lns3-network -lns3-stats -lns3-core >&2
    mv "$bin.tmp" "$bin"
fi
echo "$bin"
