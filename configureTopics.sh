#!/usr/bin/env bash
# Create or update the photoscore Kafka topics (photos.uploaded, photos.scores, photos.scores.shadow
# for a rollout's shadow scores, photos.dlq: every topic of kafka.topics) with the partitions and
# small retention.ms from config (conf/photoscore.yaml, PHOTOSCORE_* env).
#
# Bootstrap servers: PHOTOSCORE_KAFKA_BOOTSTRAP (a real Kafka cluster) or, when unset, the
# embedded broker started by `photoscore broker start`. Safe to rerun: what is already right is
# left alone, what differs is updated. Exits non-zero with a message when no broker answers.
#
# Usage: ./configureTopics.sh            (PHOTOSCORE_PYTHON picks the interpreter; default: .venv)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PHOTOSCORE_PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in "$here/.venv/bin/python" "$here/.venv-flink/bin/python" "$(command -v python3 || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" -c "import kafka, jobs.configure_topics" 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
if [[ -z "$python" ]]; then
  echo "configureTopics: no Python with kafka-python and photoscore installed; run 'uv sync' or set PHOTOSCORE_PYTHON" >&2
  exit 3
fi
exec "$python" -m jobs.configure_topics
