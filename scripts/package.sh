#!/usr/bin/env bash
# Builds every artefact users install, into target/packages (as root, on the machine setup.sh
# prepares; scripts/test-pkg.sh then exercises each one as a user would):
#
#   egress-router-image-VERSION.tar      the container image (OCI archive; also tagged
#                                        registry.example/egress-router:VERSION in the private
#                                        podman store of scripts/podman-env.sh)
#   egress-router-keepalived-image-VERSION.tar
#                                        the HA sidecar image: keepalived and conntrackd from
#                                        Debian's packages, with egress-router (tagged
#                                        registry.example/egress-router-keepalived:VERSION)
#   egress-VERSION-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl, egress-VERSION.tar.gz
#                                        the Python wheel and sdist
#   egress-router-VERSION.tar.gz         the Ansible collection egress.router
#   libegress-VERSION-x86_64-linux-gnu.tar.gz
#                                        the C library, `make install PREFIX=/usr/local` staged
#   egress-core-VERSION.crate, egress-openshift-VERSION.crate, egress-cni-VERSION.crate
#                                        `cargo package`, each verified by a build from the .crate
#   SHA256SUMS
#
# VERSION is the workspace version in the root Cargo.toml, the one place it is kept; CHANGELOG.md
# must have its section. Network: crates.io and PyPI while building (the build tools, crates not
# yet in ~/.cargo); the artefacts need none.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ $EUID -ne 0 ]]; then
  echo "package: needs root (podman builds the image in a store of its own)" >&2
  exit 1
fi
scripts/setup.sh
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
if [[ $target != "$root"/* ]]; then
  echo "package: the target dir $target must be inside $root (the image's build context)" >&2
  exit 1
fi
dist=$target/packages
work=$target/pkg
musl=x86_64-unknown-linux-musl
image_name=registry.example/egress-router
ha_image_name=registry.example/egress-router-keepalived

# `cargo pkgid` prints path+file:///…/egress-core#0.1.0.
version=$(cargo pkgid -p egress-core | sed 's/.*[#@]//')
if ! grep -q "^## \[$version\]" CHANGELOG.md; then
  echo "package: CHANGELOG.md has no section '## [$version]' for the workspace version" >&2
  exit 1
fi
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
echo "== package egress $version ($revision) into $dist"
rm -rf "$dist"
mkdir -p "$dist" "$work"

# The build tools, in scripts/test-py.sh's virtualenv (made if missing, added to if not): maturin
# names its zig linker wrapper after the path of the Python that runs zig, and cargo rebuilds
# every crate when the linker changes, so one virtualenv lets one wheel build serve both scripts.
tools=$target/py-venv
if [[ ! -x $tools/bin/python ]]; then
  "${PYTHON:-python3}" -m venv "$tools"
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check \
  "maturin>=1.9.4,<2" ziglang "ansible-core>=2.19,<2.20" kubernetes-validate

echo "== static binaries (musl, profile dist)"
cargo build --quiet --profile dist --target "$musl" \
  --bin egress-router --bin egress-cni --bin egress-cni-install

echo "== container image $image_name:$version"
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh
# A run that was killed may have left containers of the tests behind; they would pin the image.
podman rm --all --force >/dev/null
podman build --quiet --layers=false --network none -f deploy/Containerfile \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg BIN="${target#"$root"/}/$musl/dist" -t "$image_name:$version" . >/dev/null
podman image prune --force >/dev/null
podman save --quiet --format oci-archive -o "$dist/egress-router-image-$version.tar" \
  "$image_name:$version"

echo "== keepalived image $ha_image_name:$version"
# Debian's keepalived and conntrackd as scripts/setup.sh installed them, each binary with the
# shared libraries ldd lists (and the loader), the copyright file of every package a file came
# from, and what keepalived looks up at run time; nothing is downloaded.
root_fs=$work/keepalived-root
rm -rf "$root_fs"
mkdir -p "$root_fs"/{etc/keepalived,etc/conntrackd,run,var/lock,var/log,usr/share/doc}
mkdir -m 1777 "$root_fs/tmp"
files=()
for binary in /usr/sbin/keepalived /usr/sbin/conntrackd; do
  files+=("$binary")
  # `libfoo.so.1 => /lib/…/libfoo.so.1 (0x…)`, and the loader as `/lib64/ld-linux….so.2 (0x…)`.
  while read -r lib; do files+=("$lib"); done < <(ldd "$binary" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
done
for f in "${files[@]}"; do
  cp --parents -L "$f" "$root_fs/"
done
# dpkg knows a library by its path under /usr (merged /usr: /lib is a link to usr/lib).
for pkg in $(for f in "${files[@]}"; do dpkg -S "$(realpath "$f")" 2>/dev/null || dpkg -S "$f"; done |
  cut -d: -f1 | sort -u); do
  mkdir -p "$root_fs/usr/share/doc/$pkg"
  cp -L "/usr/share/doc/$pkg/copyright" "$root_fs/usr/share/doc/$pkg/"
done
printf 'root:x:0:0:root:/:/usr/sbin/nologin\n' >"$root_fs/etc/passwd"
printf 'root:x:0:\n' >"$root_fs/etc/group"
podman build --quiet --layers=false --network none -f deploy/keepalived/Containerfile \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg ROOT="${root_fs#"$root"/}" --build-arg BIN="${target#"$root"/}/$musl/dist" \
  -t "$ha_image_name:$version" . >/dev/null
podman image prune --force >/dev/null
podman save --quiet --format oci-archive -o "$dist/egress-router-keepalived-image-$version.tar" \
  "$ha_image_name:$version"

echo "== python wheel and sdist (maturin)"
# The same command and virtualenv as scripts/test-py.sh, so the second of them finds the build
# done.
(
  export VIRTUAL_ENV=$tools PATH=$tools/bin:$PATH
  maturin build --quiet --release --zig --compatibility manylinux2014 \
    --manifest-path egress-py/Cargo.toml --out "$dist"
  maturin sdist --manifest-path egress-py/Cargo.toml --out "$dist" >/dev/null
)

echo "== ansible collection egress.router"
# The collection's folder holds a link to the module (examples/ansible/library/egress_router.py)
# and no version: the staged copy gets the file and the workspace version.
stage=$work/collection/ansible_collections/egress/router
rm -rf "$work/collection"
mkdir -p "$stage"
cp -RL deploy/ansible/egress/router/. "$stage/"
rm -rf "$stage/tests/output"
printf 'version: %s\n' "$version" >>"$stage/galaxy.yml"
"$tools/bin/ansible-galaxy" collection build "$stage" --output-path "$dist" >/dev/null

echo "== C library (make install, staged)"
stage=$work/libegress
rm -rf "$stage"
make -C egress-ffi --no-print-directory install CARGO="cargo --quiet" DESTDIR="$stage" \
  PREFIX=/usr/local >/dev/null
# As a distribution's package ships it: without debug information (most of libegress.a's is
# the Rust standard library's).
strip --strip-debug "$stage/usr/local/lib/libegress.a" "$stage/usr/local/lib/libegress.so.${version%%.*}"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner \
  -czf "$dist/libegress-$version-x86_64-linux-gnu.tar.gz" usr

echo "== crates (cargo package, verified)"
crates=(egress-core egress-openshift egress-cni)
# The verification builds each crate from its packaged copy, which cargo unpacks under
# $CARGO_HOME/registry/src/-HASH/ (a local registry of the packaged crates) and keeps: a copy
# packaged by an earlier run (same name and version, older sources) would be used again, and
# its build in the shared target dir too. Both go first.
for c in "${crates[@]}"; do
  rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/"$c-$version"
done
cargo clean --quiet "${crates[@]/#/-p}"
# --allow-dirty: a developer may package work in progress; the .crate records that it was.
cargo package --quiet --allow-dirty "${crates[@]/#/-p}"
for c in "${crates[@]}"; do
  cp "$target/package/$c-$version.crate" "$dist/"
done

(cd "$dist" && sha256sum -- * >SHA256SUMS)
echo "== $dist"
(cd "$dist" && ls -l --time-style=+ -- * | awk '{printf "%10d  %s\n", $5, $NF}')
