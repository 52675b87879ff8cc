#!/usr/bin/env bash
# System packages the tests need beyond the machine image: Java 17 + Maven (Spark, Delta jars)
# and Debian's Chromium (the HTML report is rendered headless in a test). Needs root; skips
# what is already there.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  echo "[system] java, mvn, chromium present"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[system] missing ${need[*]}: install them with apt-get (needs root)" >&2; exit 1
fi
echo "[system] installing ${need[*]}"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
