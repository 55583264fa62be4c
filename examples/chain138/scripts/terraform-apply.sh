#!/bin/sh
# Stand-in for `terraform apply` of one region's infrastructure.
# usage: terraform-apply.sh REGION BASE_SECONDS
set -eu
. "$(dirname "$0")/lib.sh"
region=$1
base=${2:-2}
mark
echo "module.region[\"$region\"]: Refreshing state..."
echo "Terraform will perform the following actions: 14 to add, 0 to change, 0 to destroy."
scaled_sleep "$base" "infra:$region"
fail_if_listed "$region" "terraform apply"
echo "module.region[\"$region\"].azurerm_kubernetes_cluster.aks: Creation complete after 6m12s"
echo "Apply complete! Resources: 14 added, 0 changed, 0 destroyed."
echo "cluster=aks-chain138-$region" >>"$FLEETRUN_OUTPUT"
echo "endpoint=https://aks-chain138-$region.$region.azmk8s.example.invalid" >>"$FLEETRUN_OUTPUT"
