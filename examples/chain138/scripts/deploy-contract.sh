#!/bin/sh
# Stand-in for `forge create` of one contract on chain 138.
# usage: deploy-contract.sh CONTRACT BASE_SECONDS [ARG...]
# Extra arguments (other contracts' addresses) are printed as constructor args.
set -eu
. "$(dirname "$0")/lib.sh"
contract=$1
base=${2:-0.5}
shift 2
mark
echo "+ forge create src/$contract.sol:$contract --rpc-url \$RPC_URL --private-key ${PRIVATE_KEY:-unset} $*"
scaled_sleep "$base" ""
fail_if_listed "$contract" "forge create $contract"
addr=$(address "$contract")
echo "Deployer: $(address deployer)"
echo "Deployed to: $addr"
echo "Transaction hash: 0x$(fake_hex "tx/$contract" 8)"
echo "address=$addr" >>"$FLEETRUN_OUTPUT"
