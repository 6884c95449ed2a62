#!/usr/bin/env bash
# Prints the path of a free-threaded CPython 3.13 ("python3.13t", built with
# --disable-gil), building it once per machine from Debian's source package
# (6-20 minutes on 2 cores) when it is missing. The workplace's shared copy of
# this tool (../shared/tools/python-ft.sh) is used when present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shared="$here/../../shared/tools/python-ft.sh"
if [ -f "$shared" ]; then
  exec bash "$shared"
fi
prefix=${PYTHON_FT_PREFIX:-/opt/python3.13t}
py="$prefix/bin/python3.13t"
if [ -x "$py" ] && "$py" -c 'import sys, sqlite3, ssl, ctypes; sys.exit(sys._is_gil_enabled())' 2>/dev/null; then
  echo "$py"; exit 0
fi
if [ -z "$(apt-cache showsrc python3.13 2>/dev/null || true)" ]; then
  cat > /etc/apt/sources.list.d/python-ft-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq >/dev/null
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential libssl-dev zlib1g-dev \
  libffi-dev libsqlite3-dev libbz2-dev liblzma-dev libreadline-dev libncurses-dev >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source --download-only python3.13 >/dev/null 2>&1
tar xJf python3.13_*.orig.tar.xz
cd Python-3.13*/
./configure --disable-gil --prefix="$prefix" --with-ensurepip=install -q > configure.log 2>&1 \
  || { tail -20 configure.log >&2; exit 1; }
make -j"$(nproc)" -s > make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
make install -s > install.log 2>&1 || { tail -30 install.log >&2; exit 1; }
"$py" -c 'import sys; assert not sys._is_gil_enabled(), "GIL is on"'
echo "$py"
