#!/bin/sh
# Regenerates the TEST-ONLY key pairs used by the unit tests in `workers/src/auth/`.
# These private keys are public (committed); never use them outside the tests.
set -eu
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_private.pem
openssl pkey -in rsa_private.pem -pubout -out rsa_public.pem
for name in ec ec_other; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${name}_private.pem"
    openssl pkey -in "${name}_private.pem" -pubout -out "${name}_public.pem"
done
