#!/usr/bin/env bash
# Fetches a software Vulkan driver that Dawn (ONNX Runtime's WebGPU provider) accepts: Mesa >= 25 lavapipe from
# Debian bookworm-backports, plus the Vulkan loader, unpacked under a private folder. Nothing is installed
# system-wide and the system's apt sources are not touched: apt runs with its own sources list, lists and cache.
#
#   bash scripts/gpu/lavapipe.sh [DIR]    # default DIR: .cache/lavapipe in the repository
#
# Prints, as its last line, the environment to run with (eval-able). Fails loudly when the packages cannot be had.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$here/.cache/lavapipe}"
root="$dir/root"
icd="$dir/lvp_icd.json"
lib="$root/usr/lib/x86_64-linux-gnu"

fail() { echo "lavapipe: $*" >&2; exit 1; }

if [ ! -f "$lib/libvulkan_lvp.so" ] || [ ! -f "$lib/libvulkan.so.1" ] || [ ! -f "$icd" ]; then
  command -v apt-get >/dev/null || fail "apt-get is not available, so Mesa's lavapipe cannot be fetched (this lane needs Debian 12)"
  [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || fail "only amd64 is supported (found $(dpkg --print-architecture 2>/dev/null || echo unknown))"
  # The mirror the system already uses (deb822 or one-line sources), so no other host is contacted.
  mirror="$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}'; \
              cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '/^deb / {print $2}'; } \
            | grep -v security | head -n1 || true)"
  [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*"
  apt_dir="$dir/apt"
  rm -rf "$apt_dir" "$root"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$root"
  cat > "$apt_dir/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main
SRC
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "Dir::State::status=/var/lib/dpkg/status"
            -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1" -o "Acquire::Retries=3")
  echo "lavapipe: reading package lists from $mirror (private apt state in $apt_dir)" >&2
  apt-get "${apt_opts[@]}" -qq update >&2 || fail "apt-get update failed for $mirror bookworm-backports"
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download -t bookworm-backports \
      mesa-vulkan-drivers mesa-libgallium libdrm2 libdrm-amdgpu1 libdrm-intel1 >&2) \
    || fail "could not download Mesa from bookworm-backports"
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download libvulkan1 >&2) || fail "could not download libvulkan1"
  for deb in "$apt_dir/debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
  [ -f "$lib/libvulkan_lvp.so" ] || fail "the Mesa package holds no libvulkan_lvp.so"
  version="$(ls "$apt_dir/debs" | sed -n 's/^mesa-vulkan-drivers_\([^_]*\)_.*/\1/p' | sed 's/%3a/:/')"
  case "$version" in 2[5-9].*|[3-9][0-9].*) ;; *) fail "bookworm-backports has Mesa $version; Dawn needs Mesa 25 or later" ;; esac
  printf '{ "ICD": { "api_version": "1.4.305", "library_path": "%s" }, "file_format_version": "1.0.0" }\n' "$lib/libvulkan_lvp.so" > "$icd"
  echo "$version" > "$dir/mesa-version"
  rm -rf "$apt_dir/lists" "$apt_dir/cache"
  echo "lavapipe: Mesa $version unpacked in $root" >&2
fi
mkdir -p "$dir/xdg" && chmod 700 "$dir/xdg"
echo "export LD_LIBRARY_PATH='$lib'${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} VK_DRIVER_FILES='$icd' VK_ICD_FILENAMES='$icd' XDG_RUNTIME_DIR='$dir/xdg'"
