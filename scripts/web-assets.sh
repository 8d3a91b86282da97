#!/usr/bin/env bash
# Refreshes the KERN UX assets embedded in the node (node/web/static/kern)
# from the npm package pinned in node/web/package.json (package-lock.json).
# The copied files are committed: `go build` needs no npm.
set -euo pipefail
cd "$(dirname "$0")/../node/web"
npm ci --no-audit --no-fund >/dev/null
src=node_modules/@kern-ux/native/dist
dst=static/kern
rm -rf "$dst"
mkdir -p "$dst/fonts/fira-sans"
cp "$src/kern.min.css" "$dst/"
cp node_modules/@kern-ux/native/LICENSE.md "$dst/LICENSE.md"
cp "$src/fonts/fira-sans.css" "$dst/fonts/"
# Only the font files the stylesheet names.
for f in $(grep -o 'FiraSans-[A-Za-z]*\.woff2' "$src/fonts/fira-sans.css" | sort -u); do
  cp "$src/fonts/fira-sans/$f" "$dst/fonts/fira-sans/"
done
echo "KERN UX $(node -p 'require("./node_modules/@kern-ux/native/package.json").version') copied to node/web/$dst"
