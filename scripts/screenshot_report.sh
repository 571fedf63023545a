#!/usr/bin/env bash
# Render a results folder's report/index.html in headless Chromium (Debian's `chromium`
# package: apt-get install chromium) to a PNG, the check that the self-contained page reads
# right in a real browser.
# Usage: scripts/screenshot_report.sh [RESULTS_DIR [OUT.png]]
#        (defaults: results/quickstart, docs/img/quickstart_report.png)
set -euo pipefail
cd "$(dirname "$0")/.."
results="${1:-results/quickstart}"
out="${2:-docs/img/quickstart_report.png}"
page="$(realpath "$results/report/index.html")"
[ -f "$page" ] || { echo "no $page (fix: lrprune report $results)" >&2; exit 1; }
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "no chromium (fix: apt-get install chromium)" >&2; exit 1; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1200,1900 --screenshot="$(realpath -m "$out")" "file://$page" 2>/dev/null
echo "wrote $out"
