#!/usr/bin/env bash
# Builds the container images the tests and the demo use, offline, from
# Debian packages (no registry is reachable): a busybox image (as an OCI
# layout directory, its oci-archive tar and a `docker save` tar) and a Node
# image holding Debian's node and the libraries ldd lists, with the seed's
# send-emails.js. Writes them to target/test-images/ (or $1). Needs root
# for apt-get when the tools are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/test-images}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

. scripts/need.sh
need pkg:busybox-static busybox-static umoci umoci skopeo skopeo node nodejs

stamp="$out/.built-v3"
if [ -f "$stamp" ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# layout NAME CMD-JSON: an OCI layout at $work/NAME from $work/NAME-root.
layout() {
  local name="$1" cmd="$2"
  local img="$work/$name"
  umoci init --layout "$img"
  umoci new --image "$img:latest"
  umoci unpack --rootless --image "$img:latest" "$work/$name-bundle" >/dev/null
  cp -a "$work/$name-root/." "$work/$name-bundle/rootfs/"
  umoci repack --image "$img:latest" "$work/$name-bundle"
  umoci config --image "$img:latest" --config.cmd "$cmd" \
    --config.env "PATH=/usr/local/bin:/usr/bin:/bin" --config.workingdir /
  umoci gc --layout "$img"
}

# busybox: /bin/busybox and its applets as links.
root="$work/busybox-root"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www"
cp /bin/busybox "$root/bin/busybox"
for applet in sh echo cat ls sleep env id httpd wget printf kill true false \
              head tail wc grep ps mkdir rm seq dd hostname yes; do
  ln -s /bin/busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
echo 'hello from a busybox container' > "$root/www/index.html"
mkdir -p "$root/www/blog"
echo '<h1>the blog, served from a container</h1>' > "$root/www/blog/index.html"
chmod 1777 "$root/tmp"
layout busybox sh
rm -rf "$out/busybox-oci"
cp -a "$work/busybox" "$out/busybox-oci"
skopeo copy --quiet "oci:$work/busybox:latest" "oci-archive:$work/busybox.tar"
mv "$work/busybox.tar" "$out/busybox.tar"

# The same image as `docker save` writes it: manifest.json, the config
# named by its digest, each layer as an uncompressed tar.
python3 - "$work/busybox" "$out/busybox-docker.tar" <<'EOF'
import gzip, hashlib, io, json, sys, tarfile
layout, dest = sys.argv[1], sys.argv[2]
def blob(d):
    return open(f"{layout}/blobs/sha256/{d.split(':')[1]}", "rb").read()
index = json.load(open(f"{layout}/index.json"))
manifest = json.loads(blob(index["manifests"][0]["digest"]))
config = blob(manifest["config"]["digest"])
with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as t:
    def add(name, data):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
    cfg_name = manifest["config"]["digest"].split(":")[1] + ".json"
    add(cfg_name, config)
    layers = []
    for i, layer in enumerate(manifest["layers"]):
        data = blob(layer["digest"])
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        name = f"layer{i}/layer.tar"
        add(name, data)
        layers.append(name)
    add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": ["busybox:latest"], "Layers": layers}]).encode())
EOF

# node: Debian's node, the libraries it links, and send-emails.js.
root="$work/node-root"
mkdir -p "$root/usr/bin" "$root/app" "$root/tmp" "$root/etc"
node_bin="$(readlink -f "$(command -v node)")"
cp "$node_bin" "$root/usr/bin/node"
ldd "$node_bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/:/bin/false\n' > "$root/etc/passwd"
cat > "$root/app/send-emails.js" <<'EOF'
// The seed's example cron job: sends the emails due, says how many.
const due = Number(process.env.EMAILS_DUE || 3);
for (let i = 1; i <= due; i++) {
  console.log(`sent email ${i} of ${due}`);
}
console.log(`send-emails done at ${new Date().toISOString()}`);
EOF
chmod 1777 "$root/tmp"
layout node '["node"]'
umoci config --image "$work/node:latest" --config.workingdir /app
skopeo copy --quiet "oci:$work/node:latest" "oci-archive:$work/node.tar"
mv "$work/node.tar" "$out/node-image.tar"

touch "$stamp"
ls -la "$out"
