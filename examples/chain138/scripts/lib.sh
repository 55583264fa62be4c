# Shared helpers of the chain138 stand-in scripts (POSIX sh; sourced, not run).
#
# Each stand-in sleeps a scaled duration, prints what the real tool would,
# publishes outputs through $FLEETRUN_OUTPUT and fails on demand:
#   CHAIN138_SCALE             multiplies every base duration (default 1)
#   CHAIN138_HEAVY_TAIL_SEED   when set, multiplies each per-region step by a
#                              deterministic lognormal factor derived from
#                              seed + task + region
#   FAIL_REGIONS               comma-separated regions (or contract names) whose
#                              steps exit 1
#   THROTTLE_REGIONS           comma-separated regions whose first attempt answers
#                              "429 Too Many Requests" and exits 75 (retried)
#   CHAIN138_MARKER_DIR        when set, one line is appended to
#                              $CHAIN138_MARKER_DIR/<task>@<region> per execution

FR_TASK=${FLEETRUN_TASK:-standalone}
FR_TARGET=${FLEETRUN_TARGET:-}

# hash32 TEXT: a deterministic unsigned 32-bit number (CRC of TEXT).
hash32() {
    printf '%s' "$1" | cksum | cut -d ' ' -f 1
}

# fake_hex TEXT WORDS: WORDS*8 hex digits derived from TEXT.
fake_hex() {
    _out=""
    _i=1
    while [ "$_i" -le "$2" ]; do
        _out="$_out$(printf '%08x' "$(hash32 "$1/$_i")")"
        _i=$((_i + 1))
    done
    printf '%s' "$_out"
}

# address NAME: a deterministic 0x-prefixed 20-byte address for NAME.
address() {
    printf '0x%s' "$(fake_hex "chain138/$1" 5)"
}

# in_list ITEM COMMA-LIST: true when ITEM is one of the list's entries.
in_list() {
    case ",$2," in
        *",$1,"*) return 0 ;;
    esac
    return 1
}

# mark: count this execution for tests (CHAIN138_MARKER_DIR).
mark() {
    if [ -n "${CHAIN138_MARKER_DIR:-}" ]; then
        _key=$FR_TASK
        [ -n "$FR_TARGET" ] && _key="$FR_TASK@$FR_TARGET"
        echo "${FLEETRUN_RUN_ID:-norun} attempt=${FLEETRUN_ATTEMPT:-1}" \
            >>"$CHAIN138_MARKER_DIR/$_key"
    fi
}

# fail_if_listed REGION WHAT: exit 1 with an error when REGION is in FAIL_REGIONS,
# exit 75 with a throttling message on the first attempt when in THROTTLE_REGIONS.
fail_if_listed() {
    if in_list "$1" "${FAIL_REGIONS:-}"; then
        echo "Error: $2 failed in region $1 (listed in FAIL_REGIONS)" >&2
        exit 1
    fi
    if in_list "$1" "${THROTTLE_REGIONS:-}" && [ "${FLEETRUN_ATTEMPT:-1}" = 1 ]; then
        echo "Error: 429 Too Many Requests: the provider throttled $2 in $1; retry later" >&2
        exit 75
    fi
}

# scaled_sleep BASE KEY: sleep BASE * CHAIN138_SCALE seconds, times a heavy-tailed
# factor (lognormal, sigma 1, median 1, capped at 12) when CHAIN138_HEAVY_TAIL_SEED
# is set and KEY ("task:region") is not empty. Each task of each region draws its
# own factor, so per-region pipelines finish at very different times; the
# unfanned contract steps pass an empty KEY and keep their base duration.
scaled_sleep() {
    _factor=1
    if [ -n "${CHAIN138_HEAVY_TAIL_SEED:-}" ] && [ -n "$2" ]; then
        _s="$CHAIN138_HEAVY_TAIL_SEED:$2"
        # CRC is linear, so two CRCs of nearly equal strings are correlated; feeding
        # each CRC's decimal digits back into the next one breaks that.
        _h0=$(hash32 "$_s")
        _h1=$(hash32 "$_h0/$_s")
        _h2=$(hash32 "$_h1/$_s/$_h0")
        # Box-Muller from two uniforms in (0, 1): z ~ N(0, 1); factor = exp(z), at most 12.
        _factor=$(awk -v a="$_h1" -v b="$_h2" 'BEGIN {
            u1 = (a + 0.5) / 4294967296; u2 = (b + 0.5) / 4294967296
            z = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2)
            f = exp(z); if (f > 12) f = 12
            printf "%.3f", f }')
    fi
    _secs=$(awk -v b="$1" -v s="${CHAIN138_SCALE:-1}" -v f="$_factor" \
        'BEGIN { printf "%.3f", b * s * f }')
    sleep "$_secs"
}
