#!/bin/sh
# Stand-in for deploying one region's Besu validators (helm).
# usage: deploy-besu.sh REGION VALIDATORS BASE_SECONDS
set -eu
. "$(dirname "$0")/lib.sh"
region=$1
validators=$2
base=${3:-2}
mark
echo "helm upgrade --install besu-$region ./charts/besu --set validators=$validators -n besu"
scaled_sleep "$base" "besu:$region"
fail_if_listed "$region" "helm upgrade besu"
i=0
while [ "$i" -lt "$validators" ]; do
    echo "pod/besu-validator-$i condition met (Ready)"
    i=$((i + 1))
done
echo "rpc_url=http://besu-$region.chain138.example.invalid:8545" >>"$FLEETRUN_OUTPUT"
echo "enode=enode://$(fake_hex "enode/$region" 16)@10.138.0.1:30303" >>"$FLEETRUN_OUTPUT"
echo "validators=$validators" >>"$FLEETRUN_OUTPUT"
