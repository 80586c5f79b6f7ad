#!/usr/bin/env sh
# CI step before promoting a rollout phase, e.g. in a deploy pipeline:
#   deploy/gate-ci.sh shadow && ./promote-to-canary
# Exit codes: 0 the gate passed (promote), 1 it failed (do not promote), 2 unknown phase or bad
# config, 3 the check itself failed (store unreadable): a pipeline can tell "not ready" from "broken".
set -eu
phase=${1:?usage: gate-ci.sh PHASE}
shadowdiff gate --phase "$phase" --since "${GATE_WINDOW:-24h}" --format text
