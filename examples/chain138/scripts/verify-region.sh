#!/bin/sh
# Stand-in for checking one region: its validators are in sync and see the router.
# usage: verify-region.sh REGION RPC_URL ROUTER_ADDRESS BASE_SECONDS
set -eu
. "$(dirname "$0")/lib.sh"
region=$1
rpc=$2
router=$3
base=${4:-0.5}
mark
echo "eth_blockNumber via $rpc"
scaled_sleep "$base" "verify:$region"
fail_if_listed "$region" "verification"
echo "region $region: in sync at block $(( $(hash32 "block/$region") % 1000 + 1000 )), router $router has code"
