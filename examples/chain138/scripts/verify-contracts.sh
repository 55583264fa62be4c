#!/bin/sh
# Stand-in for verifying every deployed contract's source on the explorer.
# usage: verify-contracts.sh BASE_SECONDS ADDRESS...
set -eu
. "$(dirname "$0")/lib.sh"
base=$1
shift
mark
scaled_sleep "$base" ""
for addr in "$@"; do
    echo "Contract $addr: source verified (Pass - Verified)"
done
echo "verified=$#" >>"$FLEETRUN_OUTPUT"
