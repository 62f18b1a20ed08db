#!/usr/bin/env bash
# jepsen-soak: run Jepsen matrix cells over many seeds and print a table of
# cells × seeds. Usage: scripts/jepsen-soak.sh SEEDS CELLS TIME
#   SEEDS  how many seeds (1..SEEDS, offset by SEED0, default 1000)
#   CELLS  space-separated workload-nemesis cells, e.g. "register-membership bank-placement"
#   TIME   duration of each run (e.g. 30s)
# Exits non-zero if any run failed. Results stay in jepsen/store/.
set -uo pipefail
seeds=${1:-20}; cells=${2:-"register-membership register-placement"}; time=${3:-30s}
seed0=${SEED0:-1000}
cd "$(dirname "$0")/.."
pattern=$(echo "$cells" | tr ' ' '|')
declare -A result
failed=0
for ((i = 1; i <= seeds; i++)); do
	seed=$((seed0 + i))
	out=$(LDCD_JEPSEN=full TIME=$time SEED=$seed go test -count=1 -timeout 2h -run "TestJepsen\$/($pattern)\$" -v ./jepsen 2>&1)
	for cell in $cells; do
		wl=${cell%%-*}; nem=${cell#*-}
		line=$(grep -E "^JEPSEN $wl +$nem " <<<"$out" | head -1)
		if [[ -z $line ]]; then
			result[$cell,$seed]="ERROR"; failed=1
		elif grep -q " ok ops=" <<<"$line"; then
			ok=$(sed -E 's/.*ok:([0-9]+).*/\1/' <<<"$line")
			result[$cell,$seed]="ok($ok)"
		else
			result[$cell,$seed]="FAIL"; failed=1
			grep -E "Error|$wl under $nem" <<<"$out" | head -5
		fi
	done
	echo "seed $seed done: $(for cell in $cells; do printf '%s=%s ' "$cell" "${result[$cell,$seed]}"; done)"
done
printf '\n| cell |'; for ((i = 1; i <= seeds; i++)); do printf ' %d |' $((seed0 + i)); done; printf '\n|---|'
for ((i = 1; i <= seeds; i++)); do printf -- '---|'; done; printf '\n'
for cell in $cells; do
	printf '| %s |' "$cell"
	for ((i = 1; i <= seeds; i++)); do printf ' %s |' "${result[$cell,$((seed0 + i))]}"; done
	printf '\n'
done
exit $failed
