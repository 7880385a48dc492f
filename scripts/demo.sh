#!/usr/bin/env bash
# make demo: simulate a demo SAR scene (seed reserved for the demo, never used in training)
# and extract its buildings through qgis_process with the bundled model, scored against the
# scene's footprints.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-output
mkdir -p "$out"
rm -f "$out"/demo_footprints.gpkg
echo "== simulating a 1024 x 1024 px quad-pol SAR scene (0.5 m, EPSG:32631) and its footprints"
.venv/bin/python -m sn6_footprints simulate "$out/demo_scene.tif" "$out/demo_truth.gpkg" --size 1024 --seed 424242
echo "== extracting buildings with the bundled model through qgis_process"
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$out/peak_rss_kb.txt" scripts/qgis_process.sh --json run sn6_footprints:extract_footprints -- \
  INPUT="$out/demo_scene.tif" GROUND_TRUTH="$out/demo_truth.gpkg" OUTPUT="$out/demo_footprints.gpkg" \
  > "$out/demo_result.json" 2> "$out/demo_log.txt" || { tail -20 "$out/demo_log.txt"; exit 1; }
end=$(date +%s.%N)
.venv/bin/python - "$out/demo_result.json" "$start" "$end" "$out/peak_rss_kb.txt" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
r = json.loads(text[text.index("{"):])["results"]
print(f"buildings found: {r['BUILDING_COUNT']}   TP {r['TP']}  FP {r['FP']}  FN {r['FN']}")
print(f"precision {r['PRECISION']:.3f}  recall {r['RECALL']:.3f}  F1 {r['F1']:.3f}")
peak_mb = int(open(sys.argv[4]).read().split()[-1]) / 1024
print(f"qgis_process wall time: {float(sys.argv[3]) - float(sys.argv[2]):.1f} s, peak memory {peak_mb:.0f} MB")
print(f"footprints: {r['OUTPUT']}")
PY
