#!/usr/bin/env bash
# `make test-infra`: install the checking tools when missing, validate every file under infra/ with
# the tool that reads it (tests/test_infra.py), then run the smoke suite against a gateway started
# for the purpose (infra/scripts/smoke_local.py, which stops everything it started).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
started=$SECONDS

bash infra/scripts/install-tools.sh
echo "test-infra: tools ready after $((SECONDS - started)) s"

# PYTEST_ARGS is a list of words: split on purpose.
# shellcheck disable=SC2086
INFRA_REQUIRE_TOOLS=1 "$PY" -m pytest tests/test_infra.py -p no:cacheprovider ${PYTEST_ARGS:-}
# The real nginx passes a GraphQL WebSocket upgrade (and leaves plain requests alone).
"$PY" infra/scripts/check_websocket_proxy.py
# shellcheck disable=SC2086
"$PY" infra/scripts/smoke_local.py ${PYTEST_ARGS:-}
echo "test-infra: done in $((SECONDS - started)) s"
