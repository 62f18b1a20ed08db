package placement

import (
	"errors"
	"fmt"
	"strconv"
)

// GlobalGroup is the id of the global group.
const GlobalGroup = "global"

// ErrBadUID is returned for a uid that is not a decimal number in [0, 2^63).
var ErrBadUID = errors.New("placement: bad uid")

// ParseUID parses a decimal userId in [0, 2^63).
func ParseUID(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadUID)
	}
	if len(s) > 1 && s[0] == '+' {
		return 0, fmt.Errorf("%w: %q is not a decimal number", ErrBadUID, s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("%w: %q is not below 2^63", ErrBadUID, s)
		}
		return 0, fmt.Errorf("%w: %q is not a decimal number", ErrBadUID, s)
	}
	if v >= 1<<63 {
		return 0, fmt.Errorf("%w: %q is not below 2^63", ErrBadUID, s)
	}
	return v, nil
}

// Shard returns the shard of uid: its last two decimal digits.
func Shard(uid uint64) int { return int(uid % NumShards) }

// ParseRange parses a shard range such as "00-24" into its bounds.
func ParseRange(s string) (lo, hi int, err error) { return parseShards(s) }
