#!/usr/bin/env bash
# Installs the offline end-to-end test environment for Residual: a real VS Code (code-server's web
# build) driven by playwright-core in Debian's Chromium. Sources: Debian apt and the npm registry only.
#
# Idempotent: every step checks first and skips what is already there. Needs root (apt-get, and
# code-server's postinstall). playwright-core, esbuild and @vscode/vsce come from the project's own
# devDependencies (npm ci), so they are not installed here.
#
#   E2E_HOME          where code-server goes (default /tmp/vscode-e2e, about 300 MB)
#   E2E_INSTALL_LOG   full log of the slow steps (default $E2E_HOME/install.log)
set -euo pipefail

E2E_HOME=${E2E_HOME:-/tmp/vscode-e2e}
# 4.100.3 = VS Code 1.100.3, the newest code-server whose postinstall accepts Node 20
# (4.103+ want Node 22). Matches "engines.vscode": "^1.100.0".
CS_VERSION=4.100.3
# code-server 4.100.3 pins @vscode/ripgrep 1.15.11, whose postinstall would fetch this asset from GitHub.
RG_PKG_VERSION=1.15.11
RG_TARBALL=ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz

mkdir -p "$E2E_HOME"
LOG=${E2E_INSTALL_LOG:-$E2E_HOME/install.log}
: >"$LOG"
started=$SECONDS
say() { echo "[e2e-install +$((SECONDS - started))s] $*"; }
logged() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[e2e-install] FAILED: $*"
    echo "[e2e-install] last lines of $LOG:"
    tail -n 40 "$LOG"
    exit 1
  fi
}

# Another process may be running apt/dpkg right now. Wait for it (up to 15 min) instead of failing
# on the lock; apt's own Lock::Timeout covers the race between this check and our apt-get call.
wait_for_apt() {
  local waited=0
  while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1 \
    || pgrep -x 'apt-get|apt|dpkg|unattended-upgr' >/dev/null 2>&1; do
    [ $waited -eq 0 ] && say "apt/dpkg is busy (another process); waiting"
    if [ $waited -ge 900 ]; then echo "[e2e-install] apt/dpkg still locked after ${waited}s" >&2; exit 1; fi
    sleep 3
    waited=$((waited + 3))
  done
}
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

# 1. Debian packages: chromium (the browser), ripgrep (/usr/bin/rg 13.0.0, the same version
#    @vscode/ripgrep would download), libkrb5-dev (gssapi.h, needed to compile the kerberos addon).
#    g++, make, python3 and /usr/include/node are assumed present (node-gyp builds from them).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v rg >/dev/null 2>&1 || missing+=(ripgrep)
[ -e /usr/include/gssapi/gssapi.h ] || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  wait_for_apt
  say "apt-get update"
  logged apt-get "${APT_OPTS[@]}" update -qq
  wait_for_apt
  say "apt-get install ${missing[*]}"
  logged env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Pre-fill @vscode/ripgrep's download cache. Its postinstall has no "skip download" switch, but it
#    reuses $TMPDIR/vscode-ripgrep-cache-<version>/<asset> when present ("Using cached download").
#    A tarball holding Debian's rg satisfies it, so code-server installs without GitHub.
RG_CACHE_DIR="${TMPDIR:-/tmp}/vscode-ripgrep-cache-$RG_PKG_VERSION"
if [ ! -s "$RG_CACHE_DIR/$RG_TARBALL" ]; then
  say "seeding $RG_CACHE_DIR with /usr/bin/rg"
  mkdir -p "$RG_CACHE_DIR"
  rgstage=$(mktemp -d)
  cp "$(command -v rg)" "$rgstage/rg"
  tar -czf "$RG_CACHE_DIR/$RG_TARBALL.partial" -C "$rgstage" rg
  mv "$RG_CACHE_DIR/$RG_TARBALL.partial" "$RG_CACHE_DIR/$RG_TARBALL"
  rm -rf "$rgstage"
fi

# 3. code-server from npm. Its postinstall runs nested `npm install`s in lib/vscode and
#    lib/vscode/extensions that compile native addons with node-gyp. Environment it needs:
#    npm_config_unsafe_perm=true  postinstall.sh refuses to run as root otherwise;
#    npm_config_yes=true          node-pty's postinstall calls `npx node-gyp`, which ~/.npmrc's yes=false cancels;
#    npm_config_nodedir=/usr      node-gyp uses the local Node headers instead of downloading them.
#    argon2/kerberos try GitHub prebuilds first, fail at once offline, then compile from source (harmless noise).
#    npm rolls the whole tree back on any failure, so "bin exists" means "install complete".
CS_DIR="$E2E_HOME/code-server"
CS_BIN="$CS_DIR/node_modules/.bin/code-server"
if [ ! -x "$CS_BIN" ]; then
  say "npm install code-server@$CS_VERSION into $CS_DIR (builds native addons, about 1-3 min)"
  mkdir -p "$CS_DIR"
  printf '{ "name": "residual-e2e-code-server", "private": true }\n' >"$CS_DIR/package.json"
  (cd "$CS_DIR" && logged env npm_config_unsafe_perm=true npm_config_yes=true npm_config_nodedir=/usr \
    npm install --no-audit --no-fund --foreground-scripts "code-server@$CS_VERSION")
else
  say "code-server already installed in $CS_DIR"
fi

# Sanity check. An empty --config and redirected XDG dirs keep even --version from writing into $HOME.
xdg="$E2E_HOME/.xdg"
mkdir -p "$xdg"
got=$(XDG_CONFIG_HOME="$xdg" XDG_DATA_HOME="$xdg" XDG_CACHE_HOME="$xdg" "$CS_BIN" --version --config /dev/null 2>/dev/null | head -n 1)
case "$got" in
  "$CS_VERSION"*) ;;
  *) echo "[e2e-install] unexpected code-server version: '$got' (want $CS_VERSION)" >&2; exit 1 ;;
esac
say "done: code-server $got ($(du -sh "$CS_DIR" | cut -f1)) in $CS_DIR; chromium: $(command -v chromium)"
