#!/usr/bin/env bash
# The compose cluster end to end, as a user runs it and as CI does: build the images without a
# registry, `docker compose up -d`, `docker compose run --rm check` (the ten SOP scenarios,
# 0 failed or this fails), then `docker compose down -v`, also when a step failed. A unique
# project name keeps it apart from a cluster the user may already run.
#
#   bash docker/compose-check.sh                 # release binaries
#   PROFILE=debug bash docker/compose-check.sh   # reuse a debug build
set -euo pipefail
cd "$(dirname "$0")/.."

compose() { docker compose -p "$project" "$@"; }
project=${COMPOSE_PROJECT_NAME:-enifab-check-$$}
# The subnet must not collide with another run's: derive it from the project name unless given.
if [ -z "${ENIFAB_SUBNET:-}" ]; then
  n=$(( $(printf '%s' "$project" | cksum | cut -d' ' -f1) % 200 + 20 ))
  export ENIFAB_SUBNET="172.30.$n.0/24"
fi

if ! docker compose version >/dev/null 2>&1; then
  echo "compose-check: 'docker compose' (Compose v2) is missing; see docker/install-compose.sh" >&2
  exit 1
fi

started=$(date +%s)
bash docker/build-images.sh
built=$(date +%s)

teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "compose-check: failed ($rc); the containers' last words:" >&2
    compose logs --no-color --tail 40 >&2 || true
  fi
  compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  # Nothing may be left: containers, networks, volumes of this project.
  local left
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$project"; \
         docker network ls -q --filter "label=com.docker.compose.project=$project"; \
         docker volume ls -q --filter "label=com.docker.compose.project=$project")
  if [ -n "$left" ]; then
    echo "compose-check: left behind: $left" >&2
    rc=1
  fi
  exit "$rc"
}
trap teardown EXIT

compose up -d
up=$(date +%s)
compose run --rm check
done_at=$(date +%s)
echo "compose-check: images $((built - started)) s, up -d $((up - built)) s, check $((done_at - up)) s"
